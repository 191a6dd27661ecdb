"""Manifests checked by tools we did not write: kubernetes-validate, CRD schemas, checkov."""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.chart.conftest import CONSUMER, CUSTOM_API_VERSIONS, EXAMPLE, VALUES_FILES, render
from tests.conftest import REPO
from tests.tools import tool

CRD_SCHEMAS = Path(__file__).parent / "crd-schemas"
FIRST_MINOR = 29
"""Oldest Kubernetes minor the charts support (native sidecars)."""
RENDERS = [
    ("example-default", EXAMPLE, None),
    *((f"example-{f.removesuffix('.yaml')}", EXAMPLE, f) for f in VALUES_FILES),
    ("minimal-consumer", CONSUMER, None),
]
"""Every rendering that is validated: both charts, every values file."""


def docs_of(chart: Path, values_file: str | None) -> tuple[dict[str, Any], ...]:
    """The documents ``helm template`` renders for ``chart`` with ``values_file``."""
    kube = "1.28.0" if values_file == "classic.yaml" else None
    return render(chart, *([values_file] if values_file else []), kube_version=kube).docs


def is_custom(doc: dict[str, Any]) -> bool:
    """A custom resource (kubernetes-validate knows only the built-in kinds)."""
    return doc["apiVersion"] in CUSTOM_API_VERSIONS


def supported_minors() -> list[str]:
    """1.29 up to the newest Kubernetes version the installed kubernetes-validate knows."""
    out = subprocess.run(
        [tool("kubernetes-validate"), "--version"], capture_output=True, text=True, check=True
    ).stdout
    newest = int(out.strip().split(".")[1])
    assert newest >= FIRST_MINOR, out
    return [f"1.{minor}.0" for minor in range(FIRST_MINOR, newest + 1)]


@functools.cache
def builtin_files(directory: Path) -> tuple[Path, ...]:
    """One YAML file per rendering with its built-in objects, written once per worker."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, chart, values_file in RENDERS:
        docs = [d for d in docs_of(chart, values_file) if not is_custom(d)]
        path = directory / f"{name}.yaml"
        path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
        paths.append(path)
    return tuple(paths)


@pytest.fixture(scope="module")
def rendered_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ...]:
    """The built-in objects of every rendering, on disk for the CLI tools."""
    return builtin_files(tmp_path_factory.mktemp("rendered"))


@pytest.mark.parametrize("version", supported_minors())
def test_kubernetes_validate_strict(version: str, rendered_files: tuple[Path, ...]) -> None:
    """Every built-in object of both charts passes kubernetes-validate --strict for ``version``."""
    proc = subprocess.run(
        [tool("kubernetes-validate"), "--strict", "-k", version, *map(str, rendered_files)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    report = proc.stdout + proc.stderr
    assert proc.returncode == 0, report
    problems = [ln for ln in report.splitlines() if not ln.startswith("INFO")]
    assert not problems, "\n".join(problems)
    objects = sum(len(list(yaml.safe_load_all(p.read_text()))) for p in rendered_files)
    assert report.count(" passed for resource ") == objects


def test_kubernetes_validate_refuses_a_misspelled_field(tmp_path: Path) -> None:
    """The strict validation above is able to fail: an unknown container field is refused."""
    deployment = next(d for d in docs_of(EXAMPLE, None) if d["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(deployment))
    proc = subprocess.run(
        [tool("kubernetes-validate"), "--strict", "-k", f"1.{FIRST_MINOR}.0", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode != 0
    assert "imagePullPolcy" in proc.stdout + proc.stderr


def crd_schema(doc: dict[str, Any]) -> dict[str, Any]:
    """The vendored JSON schema of a custom resource's kind and version."""
    group, _, version = doc["apiVersion"].rpartition("/")
    path = CRD_SCHEMAS / group / f"{doc['kind'].lower()}_{version}.json"
    assert path.is_file(), f"no schema for {doc['apiVersion']} {doc['kind']} in {CRD_SCHEMAS}"
    schema: dict[str, Any] = json.loads(path.read_text())
    return schema


def custom_resources() -> list[dict[str, Any]]:
    """Every custom resource any rendering produces."""
    return [d for _, chart, f in RENDERS for d in docs_of(chart, f) if is_custom(d)]


def test_custom_resources_match_their_crd_schemas() -> None:
    """PodMonitor, PrometheusRule, HTTPRoute and BackendTrafficPolicy fit their upstream schemas."""
    found = custom_resources()
    kinds = {d["kind"] for d in found}
    assert kinds == {"PodMonitor", "PrometheusRule", "HTTPRoute", "BackendTrafficPolicy"}
    for doc in found:
        schema = crd_schema(doc)
        validator = jsonschema.validators.validator_for(schema, jsonschema.Draft7Validator)
        errors = [e.message for e in validator(schema).iter_errors(doc)]
        assert not errors, f"{doc['kind']}: {errors}"


def test_crd_schemas_refuse_unknown_fields() -> None:
    """The CRD schemas are strict: a misspelled field of a rendered PodMonitor is an error."""
    monitor = next(d for d in custom_resources() if d["kind"] == "PodMonitor")
    monitor["spec"]["podMetricEndpoints"] = monitor["spec"].pop("podMetricsEndpoints")
    schema = crd_schema(monitor)
    validator = jsonschema.validators.validator_for(schema, jsonschema.Draft7Validator)
    assert list(validator(schema).iter_errors(monitor))


def checkov_report(directory: Path) -> tuple[dict[str, Any], ...]:
    """checkov's JSON report on every example rendering and the Dockerfile (one run)."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, chart, values_file in RENDERS:
        if chart == EXAMPLE:
            docs = docs_of(chart, values_file)
            (directory / f"{name}.yaml").write_text(yaml.safe_dump_all(docs, sort_keys=False))
    shutil.copy(REPO / "Dockerfile", directory / "Dockerfile")
    proc = subprocess.run(
        [
            tool("checkov"),
            "--config-file",
            str(REPO / ".checkov.yaml"),
            "-d",
            str(directory),
            "--output",
            "json",
            "--compact",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
        cwd=directory,
    )
    assert proc.stdout.strip(), proc.stderr
    data = json.loads(proc.stdout)
    return tuple(data if isinstance(data, list) else [data])


def test_checkov_passes_the_example_chart_and_the_dockerfile(tmp_path: Path) -> None:
    """checkov finds no failed check in any example rendering or the Dockerfile (reviewed skips)."""
    reports = {r["check_type"]: r for r in checkov_report(tmp_path / "scan")}
    assert set(reports) == {"kubernetes", "dockerfile"}
    for kind, report in reports.items():
        failed = [f"{c['check_id']} {c['resource']}" for c in report["results"]["failed_checks"]]
        assert not failed, f"{kind}: {failed}"
        assert report["summary"]["passed"] > 50, kind
        assert report["summary"]["parsing_errors"] == 0, kind


def test_every_checkov_skip_has_a_reason() -> None:
    """Each skipped check in .checkov.yaml carries a one-line reason on its line."""
    config = yaml.safe_load((REPO / ".checkov.yaml").read_text())
    lines = (REPO / ".checkov.yaml").read_text().splitlines()
    for check in config["skip-check"]:
        (line,) = [ln for ln in lines if ln.strip().startswith(f"- {check} ")]
        reason = line.split("#", 1)[1].strip() if "#" in line else ""
        assert len(reason) > 20, f"{check}: no reason"
