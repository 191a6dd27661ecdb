"""Revisions that no clock or hostile file can pin: the real init container and sidecar against a
file:// registry and a real MLflow server."""

from __future__ import annotations

import json
import re
import time
from dataclasses import replace
from pathlib import Path

from pointercache.model.pointer import Pointer
from tests.e2e.conftest import World
from tests.e2e.helpers import Sidecar, run_init, wait_until
from tests.mlflow_server import MlflowServer

ENTRY = "recommender.alias-production.json"


def _metric(sidecar: Sidecar, series: str) -> float:
    """The value of one series in the sidecar's /metrics (Prometheus text)."""
    _, body = sidecar.get("/metrics")
    pattern = re.escape(series) + r" ([0-9.e+]+)$"
    match = re.search(pattern, body.decode(), re.MULTILINE)
    assert match is not None, series
    return float(match.group(1))


def _refresh(sidecar: Sidecar) -> str:
    code, body = sidecar.get("/refresh?wait=60", method="POST")
    assert code == 200, body
    outcome: str = json.loads(body)["outcome"]
    return outcome


def test_one_bogus_revision_pins_nothing_for_longer_than_the_grace(
    world: World, cli_env: dict[str, str]
) -> None:
    """After one answer at 2**63-1, the healthy answer is refused (status, metric, warning) for
    --stale-grace seconds, then served; the node LKG follows."""
    world.publish(2**63 - 1, "1")
    assert run_init(cli_env, *world.init_args()).returncode == 0
    world.publish(18, "2")
    sidecar = Sidecar(cli_env, [*world.common(), "--poll-interval", "3600", "--stale-grace", "2"])
    try:
        assert _refresh(sidecar) == "stale"
        assert _refresh(sidecar) == "stale"  # POST /refresh alone does not override the rule
        status = sidecar.status()
        assert status["current"]["version"] == "1"
        refused = status["refused"]
        assert (refused["version"], refused["revision"]) == ("2", 18)
        assert refused["served_revision"] == 2**63 - 1
        assert 0 <= refused["accepted_in_seconds"] <= 2
        assert [h["event"] for h in status["history"]].count("stale-answer") == 1  # once
        warning = sidecar.find("stale-answer")
        assert warning is not None and warning["level"] == "warning"
        # the sidecar's own first poll, then the two forced refreshes
        assert _metric(sidecar, 'pointercache_refreshes_total{outcome="stale"}') == 3
        assert _metric(sidecar, "pointercache_revision_resets_total") == 0
        wait_until(lambda: _refresh(sidecar) == "flipped", timeout=20, interval=0.5)
        status = sidecar.status()
        assert (status["current"]["version"], status["current"]["revision"]) == ("2", 18)
        assert _metric(sidecar, "pointercache_revision_resets_total") == 1
        assert Pointer.read(world.lkg / ENTRY).revision == 18
        world.publish(19, "1")
        assert _refresh(sidecar) == "rollback"  # and the counter moves on from 18 as usual
    finally:
        sidecar.stop()


def test_a_higher_node_lkg_revision_never_refuses_the_registry(
    world: World, cli_env: dict[str, str]
) -> None:
    """A planted node LKG (revision 9e18) changes nothing for init or sidecar."""
    world.publish(5, "1")
    assert run_init(cli_env, *world.init_args()).returncode == 0
    planted = replace(Pointer.read(world.lkg / ENTRY), revision=9 * 10**18)
    (world.lkg / ENTRY).write_bytes(planted.to_json())
    world.manifest.unlink()  # an outage: the next pod starts from the planted entry
    pod2 = world.base / "pod2"
    assert run_init(cli_env, *world.init_args(root=pod2)).returncode == 0
    assert Pointer.read(pod2 / "pointer.json").source == "lkg-node"
    world.publish(6, "2")  # the registry is back with a healthy answer
    sidecar = Sidecar(cli_env, [*world.common(root=pod2), "--poll-interval", "3600"])
    try:
        wait_until(lambda: sidecar.status()["current"]["version"] == "2")  # its first poll
        assert sidecar.status()["current"]["revision"] == 6
        assert sidecar.find("stale-answer") is None
    finally:
        sidecar.stop()


def test_mlflow_without_the_tag_is_never_pinned_by_a_clock(
    mlflow: MlflowServer, cli_env: dict[str, str], tmp_path: Path
) -> None:
    """No revision tag: nothing is made up from a clock. A node LKG written by a pod whose clock
    ran 45 s fast (revision = its epoch ms) does not make v2 stale for a new pod or a sidecar."""
    model = mlflow.new_model("skew")
    v1 = mlflow.create_version(model, {"w.bin": b"1" * 32})
    v2 = mlflow.create_version(model, {"w.bin": b"2" * 32})
    mlflow.set_alias(model, "production", v1)
    common = [
        *("--model", model, "--registry", mlflow.registry_uri, "--registry-timeout", "10"),
        *("--lkg-dir", str(tmp_path / "node")),
        *("--allow", f"mlflow-artifacts+http://127.0.0.1:{mlflow.port}/"),
    ]
    pod1 = tmp_path / "pod1"
    assert run_init(cli_env, *common, "--root", str(pod1)).returncode == 0
    entry = next((tmp_path / "node").glob("*.alias-production.json"))
    assert Pointer.read(entry).revision == 0  # MLflow made no claim
    fast_clock = time.time_ns() // 1_000_000 + 45_000  # what a clock 45 s fast used to write
    entry.write_bytes(replace(Pointer.read(entry), revision=fast_clock).to_json())
    mlflow.set_alias(model, "production", v2)
    pod2 = tmp_path / "pod2"
    proc = run_init(cli_env, *common, "--root", str(pod2))
    assert proc.returncode == 0, proc.stderr
    assert Pointer.read(pod2 / "pointer.json").version == v2
    sidecar = Sidecar(cli_env, [*common, "--root", str(pod1), "--poll-interval", "3600"])
    try:
        wait_until(lambda: sidecar.status()["current"]["version"] == v2)  # its first poll
        assert sidecar.find("stale-answer") is None
    finally:
        sidecar.stop()
