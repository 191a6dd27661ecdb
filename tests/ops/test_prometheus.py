"""A real Prometheus scrapes a real sidecar: every rule and dashboard expression evaluates.

The sidecar serves v1, flips to v2 (a download), refuses v3 (the signature gate), flips to v4 (a
second download) and confirms v4; the model container acknowledged v1, v2 and v4, then v2 again
(it still serves v2: behind the published v4).
Prometheus scrapes it every second with the rules loaded.
Expressions are sent through the HTTP API with the dashboard's variables set to "All".
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import World
from tests.e2e.helpers import MODEL, Sidecar, make_artifact, run_init, wait_until
from tests.ops.conftest import SLOW_POLL, Monitored
from tests.ops.test_dashboard import CORE_ROW, DASHBOARD, panels_by_row
from tests.ops.test_rules import RULES, alerts
from tests.tools import tool

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("prometheus")]

FITS = {"inputs": [{"name": "amount", "type": "double"}]}
CLASHES = {"inputs": [{"name": "amount", "type": "string"}]}
VARIABLES = {
    "$__rate_interval": "1m",
    "$namespace": ".*",
    "$model": ".*",
    "$pod": ".*",
}
"""Dashboard variables as Grafana would expand them: "All" is ".*"; 1m covers the whole run."""


@dataclass
class Prometheus:
    """A Prometheus server on loopback and its HTTP API."""

    proc: subprocess.Popen[bytes]
    url: str

    def api(self, path: str, **params: str) -> dict[str, Any]:
        """GET ``/api/v1/<path>`` and return the decoded answer (whatever its status)."""
        query = urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as r:
                body = r.read()
        except urllib.error.HTTPError as exc:  # 400/422: a bad expression, with an error field
            with exc:
                body = exc.read()
        answer: dict[str, Any] = json.loads(body)
        return answer

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Evaluate ``expr`` now; fail the test with Prometheus's error if it does not parse."""
        answer = self.api("query", query=expr)
        assert answer["status"] == "success", f"{expr}: {answer.get('error')}"
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def value(self, expr: str) -> float:
        """The single value ``expr`` evaluates to now (NaN when it has no result)."""
        result = self.query(expr)
        return float(result[0]["value"][1]) if len(result) == 1 else math.nan


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_prometheus(base: Path, target: str) -> Prometheus:
    """Prometheus with the rules file, scraping ``target`` every second as pod models/demo-0."""
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {
                "job_name": "pointercache",
                "static_configs": [
                    {"targets": [target], "labels": {"namespace": "models", "pod": "demo-0"}}
                ],
            }
        ],
    }
    (base / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    with (base / "prometheus.log").open("wb") as log:  # the child keeps its own descriptor
        proc = subprocess.Popen(
            [
                tool("prometheus"),
                f"--config.file={base / 'prometheus.yml'}",
                f"--storage.tsdb.path={base / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    prometheus = Prometheus(proc, f"http://127.0.0.1:{port}")

    def ready() -> bool:
        assert proc.poll() is None, (base / "prometheus.log").read_text()[-2000:]
        try:
            with urllib.request.urlopen(f"{prometheus.url}/-/ready", timeout=2) as r:
                return r.status == 200
        except urllib.error.HTTPError as exc:  # 503 while the storage opens
            exc.close()
            return False

    wait_until(ready, timeout=60, interval=0.2)
    return prometheus


def world_with_signatures(base: Path) -> tuple[World, Path]:
    """Artifacts v1..v4 (v3's signature clashes with the serving code's) and that code's file."""
    for version in ("1", "2", "3", "4"):
        make_artifact(base, version)
    world = World(
        base,
        base / "registry" / f"{MODEL}.json",
        base / "pod",
        base / "node-lkg",
        base / "termination-log",
    )
    world.publish(1, "1", signatures=SIGNATURES)
    expected = base / "serving-signature.json"
    expected.write_text(json.dumps(FITS))
    return world, expected


SIGNATURES = {"1": FITS, "2": FITS, "3": CLASHES, "4": FITS}


def scraped_since(prometheus: Prometheus, expr: str, minimum: float) -> None:
    """Wait until Prometheus has scraped a value of ``expr`` of at least ``minimum``."""
    wait_until(lambda: prometheus.value(expr) >= minimum, timeout=60, interval=0.2)


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    """Prometheus after it watched the sidecar flip, block, flip again and confirm."""
    base = tmp_path_factory.mktemp("prometheus")
    env = {k: v for k, v in os.environ.items() if not k.startswith("POINTERCACHE_")}
    env |= {"PYTHONUNBUFFERED": "1", "HOME": str(base)}
    world, expected = world_with_signatures(base)
    gate = ["--expect-signature", str(expected)]
    assert run_init(env, *world.init_args(*gate)).returncode == 0
    sidecar = Sidecar(env, [*world.common(), *gate, *SLOW_POLL])
    monitored = Monitored(world, sidecar)
    prometheus = start_prometheus(base, sidecar.url.removeprefix("http://"))
    try:
        scraped_since(prometheus, 'count_over_time(up{job="pointercache"}[1m])', 2)
        monitored.acknowledge()
        count = monitored.count("flipped")
        world.publish(2, "2", signatures=SIGNATURES)
        wait_until(lambda: monitored.count("flipped") > count)
        monitored.acknowledge()
        scraped_since(prometheus, "pointercache_download_seconds_count", 1)
        scraped_since(prometheus, "pointercache_flip_to_loaded_seconds_count", 1)
        count = monitored.count("flip-blocked")
        world.publish(3, "3", signatures=SIGNATURES)
        wait_until(lambda: monitored.count("flip-blocked") > count)
        assert monitored.refresh() == "blocked"
        count = monitored.count("flipped")
        world.publish(4, "4", signatures=SIGNATURES)
        wait_until(lambda: monitored.count("flipped") > count)
        monitored.acknowledge()
        assert monitored.refresh() == "unchanged"
        scraped_since(prometheus, "pointercache_download_seconds_count", 2)
        scraped_since(prometheus, 'pointercache_refreshes_total{outcome="blocked"}', 2)
        scraped_since(prometheus, 'pointercache_served_info{version="4"}', 1)
        scraped_since(prometheus, "pointercache_flip_to_loaded_seconds_count", 2)
        v2 = json.dumps({"version": "2", "digest": world_digest(world, "2")}).encode()
        assert sidecar.get("/loaded", method="POST", body=v2)[0] == 200
        wait_until(lambda: loaded_versions(prometheus) == ["2"], timeout=60, interval=0.2)
        yield prometheus
    finally:
        prometheus.proc.send_signal(signal.SIGTERM)
        prometheus.proc.wait(30)
        sidecar.stop(signal.SIGKILL)


def world_digest(world: World, version: str) -> str:
    """The digest of a version staged on the world's volume."""
    pointers = (world.root / "versions" / MODEL).glob(f"{version}-*/pointer.json")
    digest: str = json.loads(next(pointers).read_text())["digest"]
    return digest


def loaded_versions(prometheus: Prometheus) -> list[str]:
    """The versions pointercache_loaded_info has now."""
    return [s["metric"]["version"] for s in prometheus.query("pointercache_loaded_info")]


def expand(expr: str) -> str:
    """A dashboard expression with its variables replaced as Grafana would."""
    for name, value in VARIABLES.items():
        expr = expr.replace(name, value)
    assert "$" not in expr, expr
    return expr


def test_prometheus_loads_every_rule_and_evaluates_it_without_error(scraped: Prometheus) -> None:
    """The rules file loads into Prometheus and every alerting rule evaluates with health ok."""
    groups = scraped.api("rules")["data"]["groups"]
    rules = {r["name"]: r for g in groups for r in g["rules"]}
    assert set(rules) == set(alerts())
    wait_until(lambda: all(r["health"] == "ok" for r in _rules(scraped)), timeout=30)


def _rules(prometheus: Prometheus) -> list[dict[str, Any]]:
    return [r for g in prometheus.api("rules")["data"]["groups"] for r in g["rules"]]


def test_every_rule_expression_parses_and_evaluates(scraped: Prometheus) -> None:
    """Each alert's expression is valid PromQL for a real Prometheus (instant query succeeds)."""
    for rule in alerts().values():
        scraped.query(rule["expr"])  # fails the test with Prometheus's error message


def test_blocked_flip_alert_fires_on_the_real_sidecar(scraped: Prometheus) -> None:
    """After the signature gate refused v3, PointercacheFlipBlocked is active for the pod."""
    wait_until(
        lambda: any(
            a["labels"]["alertname"] == "PointercacheFlipBlocked" and a["labels"]["pod"] == "demo-0"
            for a in scraped.api("alerts")["data"]["alerts"]
        ),
        timeout=30,
    )


def test_every_dashboard_expression_parses(scraped: Prometheus) -> None:
    """Each expression of each panel, variables expanded, is accepted by Prometheus."""
    for panels in panels_by_row().values():
        for panel in panels:
            for target in panel["targets"]:
                scraped.query(expand(target["expr"]))


def test_every_core_panel_returns_data(scraped: Prometheus) -> None:
    """Each query of the Serving row returns at least one series with a finite value."""
    empty = []
    for panel in panels_by_row()[CORE_ROW]:
        for target in panel["targets"]:
            result = scraped.query(expand(target["expr"]))
            values = [float(s["value"][1]) for s in result]
            if not any(math.isfinite(v) for v in values):
                empty.append(f"{panel['title']}: {target['expr']} -> {values}")
    assert not empty, "\n".join(empty)


def test_core_panels_show_what_happened(scraped: Prometheus) -> None:
    """The served table names v4 from the registry; downloads, flips and blocks are counted."""
    served = {
        (s["metric"]["version"], s["metric"]["source"])
        for s in scraped.query(expand(panels_by_row()[CORE_ROW][0]["targets"][0]["expr"]))
    }
    assert served == {("4", "registry")}
    assert scraped.value("pointercache_signature_blocks_total") == 1
    assert scraped.value("pointercache_download_seconds_count") == 2
    assert scraped.value('pointercache_refreshes_total{outcome="flipped"}') == 2


def test_dashboard_variables_find_the_pod(scraped: Prometheus) -> None:
    """Each variable's label_values() selector finds the scraped pod's label value."""
    variables = json.loads(DASHBOARD.read_text())["templating"]["list"]
    expected = {"namespace": "models", "model": MODEL, "pod": "demo-0"}
    for variable in variables:
        if variable["type"] != "query":
            continue
        inner = variable["query"].removeprefix("label_values(").removesuffix(")")
        selector, _, label = inner.rpartition(",")
        result = scraped.query(expand(selector.strip()))
        assert {s["metric"].get(label.strip()) for s in result} == {expected[variable["name"]]}


def test_every_model_container_panel_returns_data(scraped: Prometheus) -> None:
    """With loads acknowledged, each query of the second row returns a finite value: the loaded
    table, the pods behind, flip to loaded."""
    empty = []
    rows = panels_by_row()
    (model_row,) = [name for name in rows if name != CORE_ROW]
    for panel in rows[model_row]:
        for target in panel["targets"]:
            values = [float(s["value"][1]) for s in scraped.query(expand(target["expr"]))]
            if not any(math.isfinite(v) for v in values):
                empty.append(f"{panel['title']}: {target['expr']} -> {values}")
    assert not empty, "\n".join(empty)


def test_the_loaded_version_behind_rule_finds_the_pod(scraped: Prometheus) -> None:
    """The real series join: the rule's expression names demo-0, published v4, loaded v2."""
    loaded = scraped.query("pointercache_loaded_info")
    assert [(s["metric"]["version"], s["metric"]["via"]) for s in loaded] == [("2", "ack")]
    behind = scraped.query(alerts()["PointercacheLoadedVersionBehind"]["expr"])
    assert [(s["metric"]["pod"], s["metric"]["version"]) for s in behind] == [("demo-0", "4")]
