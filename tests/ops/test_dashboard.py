"""The Grafana dashboard: generated from code, checked in byte for byte, covering every metric."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from tests.conftest import REPO

GENERATOR = REPO / "deploy" / "grafana" / "dashboard.py"
DASHBOARD = REPO / "deploy" / "grafana" / "pointercache.json"
CORE_ROW = "Serving"


def panels_by_row() -> dict[str, list[dict[str, Any]]]:
    """Panels of the checked-in dashboard grouped under the row above them."""
    rows: dict[str, list[dict[str, Any]]] = {}
    current = ""
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        if panel["type"] == "row":
            current = panel["title"]
            rows[current] = []
        else:
            rows.setdefault(current, []).append(panel)
    return rows


def expressions() -> list[str]:
    """Every PromQL expression of every panel."""
    return [t["expr"] for ps in panels_by_row().values() for p in ps for t in p["targets"]]


def test_checked_in_json_is_what_the_code_builds() -> None:
    """Regenerating the dashboard gives byte-identical JSON (run `make dashboard` after edits)."""
    proc = subprocess.run(
        [sys.executable, str(GENERATOR)], capture_output=True, text=True, check=True, timeout=60
    )
    assert proc.stdout == DASHBOARD.read_text()


def test_every_panel_queries_prometheus_through_the_variable() -> None:
    """Each panel has at least one target, on the ${datasource} variable, with a unique refId."""
    for panels in panels_by_row().values():
        for panel in panels:
            refs = [t["refId"] for t in panel["targets"]]
            assert refs and len(refs) == len(set(refs)), panel["title"]
            for target in panel["targets"]:
                assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}


def test_panels_cover_every_metric() -> None:
    """Every metric the sidecar exports or will export is on some panel."""
    text = " ".join(expressions())
    for metric in (
        "pointercache_served_info",
        "pointercache_staleness_seconds",
        "pointercache_refresh_duration_seconds_bucket",
        "pointercache_refreshes_total",
        "pointercache_fallbacks_total",
        "pointercache_signature_blocks_total",
        "pointercache_download_bytes_total",
        "pointercache_download_seconds_bucket",
        "pointercache_loaded_info",
        "pointercache_flip_to_loaded_seconds_bucket",
    ):
        assert metric in text, metric


def test_core_row_reads_only_what_every_sidecar_exports() -> None:
    """The Serving row never depends on load acknowledgements (pointercache_loaded_info...)."""
    core = [t["expr"] for p in panels_by_row()[CORE_ROW] for t in p["targets"]]
    assert core
    assert not [e for e in core if "loaded" in e]
