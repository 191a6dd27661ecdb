"""Every rendered manifest parses into the kubernetes client's model classes, field for field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import kubernetes.client
import pytest

from tests.chart.conftest import CONSUMER, CUSTOM_API_VERSIONS, EXAMPLE, VALUES_FILES, render


def model_class(doc: dict[str, Any]) -> str:
    """``apps/v1`` + ``Deployment`` -> ``V1Deployment``; ``autoscaling/v2`` -> ``V2...``."""
    version = doc["apiVersion"].rsplit("/", 1)[-1]
    return version[0].upper() + version[1:] + doc["kind"]


def roundtrip(doc: dict[str, Any]) -> dict[str, Any]:
    """Parse ``doc`` into its model class and serialize it back (unknown fields are dropped)."""
    api = kubernetes.client.ApiClient()
    name = model_class(doc)
    assert hasattr(kubernetes.client, name), f"no kubernetes model {name}"
    obj = api.deserialize(json.dumps(doc), name, "application/json")
    assert type(obj).__name__ == name
    back: dict[str, Any] = api.sanitize_for_serialization(obj)
    return back


CASES = [(EXAMPLE, None), *((EXAMPLE, f) for f in VALUES_FILES), (CONSUMER, None)]


@pytest.mark.parametrize(
    ("chart", "values_file"),
    CASES,
    ids=["example", *VALUES_FILES, "minimal"],
)
def test_every_manifest_parses_into_kubernetes_models(chart: Path, values_file: str | None) -> None:
    """Each built-in document becomes its V1/V2 model, and no field is lost (none misspelled)."""
    rendered = render(chart, *([values_file] if values_file else []))
    assert rendered.docs
    for doc in rendered.docs:
        if doc["apiVersion"] in CUSTOM_API_VERSIONS:
            continue  # custom resources: checked against their CRD schemas in test_validate.py
        assert roundtrip(doc) == doc, f"{doc['kind']} {doc['metadata']['name']} changed"
