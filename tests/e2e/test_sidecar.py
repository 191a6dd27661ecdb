"""The sidecar as a real process: flips, outages, status, metrics, forced refresh, SIGTERM."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from pointercache.model.pointer import Pointer
from tests.e2e.conftest import World
from tests.e2e.helpers import Sidecar, run_init, wait_until

SLOW_POLL = ["--poll-interval", "3600"]


@pytest.fixture
def started(world: World, cli_env: dict[str, str]) -> Iterator[Sidecar]:
    """Init has published v1; a sidecar with a one-hour poll runs (only the watch can flip)."""
    assert run_init(cli_env, *world.init_args()).returncode == 0
    sidecar = Sidecar(cli_env, [*world.common(), *SLOW_POLL])
    yield sidecar
    sidecar.stop(signal.SIGKILL)


def version(sidecar: Sidecar) -> str | None:
    """The version the sidecar reports as served."""
    current = sidecar.status()["current"]
    return current["version"] if current else None


def test_sidecar_serves_health_ready_and_status(started: Sidecar, world: World) -> None:
    """A published volume makes /healthz and /readyz answer 200 and /status describe it."""
    assert started.get("/healthz")[0] == 200
    assert started.get("/readyz")[0] == 200
    doc = wait_until(lambda: started.status()["registry"]["last_contact"] and started.status())
    assert doc["current"]["version"] == "1"
    assert doc["current"]["source"] == "registry"
    assert doc["registry"]["last_error"] is None
    assert doc["lkg"]["node"]["version"] == "1"
    assert [s["version"] for s in doc["staged"]] == ["1"]


def test_sidecar_flips_on_a_manifest_change_through_the_watch(
    started: Sidecar, world: World
) -> None:
    """A new production alias is prestaged, verified and flipped without waiting for a poll."""
    world.publish(2, "2")
    wait_until(lambda: version(started) == "2")
    pointer = Pointer.read(world.root / "pointer.json")
    assert (pointer.version, pointer.revision) == ("2", 2)
    assert started.status()["history"][0]["event"] == "flipped"
    assert Pointer.read(world.lkg / "recommender.alias-production.json").version == "2"


def test_sidecar_keeps_serving_through_a_registry_outage(started: Sidecar, world: World) -> None:
    """With the manifest gone, the sidecar stays ready on the last good version and says why."""
    world.manifest.unlink()
    code, body = started.get("/refresh", method="POST")
    assert code == 200, body
    doc = started.status()
    assert doc["current"]["version"] == "1"
    assert doc["registry"]["last_error"]
    assert started.get("/readyz")[0] == 200
    world.publish(2, "2")
    wait_until(lambda: version(started) == "2")
    assert started.status()["registry"]["last_error"] is None


def test_sidecar_refuses_a_lower_revision(started: Sidecar, world: World) -> None:
    """An answer with a lower revision than the one served (a lagging replica) is refused."""
    world.publish(5, "2")
    wait_until(lambda: version(started) == "2")
    world.publish(3, "1")
    wait_until(lambda: started.find("stale-answer"))
    assert version(started) == "2"
    world.publish(6, "1")
    wait_until(lambda: version(started) == "1")
    assert started.status()["history"][0]["event"] == "rollback"


def test_forced_refresh_needs_the_token(
    world: World, cli_env: dict[str, str], tmp_path: Path
) -> None:
    """With --admin-token-file, POST /refresh answers 403 without the bearer token, 200 with it."""
    assert run_init(cli_env, *world.init_args()).returncode == 0
    token = tmp_path / "token"
    token.write_text("s3cret-token\n")
    sidecar = Sidecar(cli_env, [*world.common(), *SLOW_POLL, "--admin-token-file", str(token)])
    try:
        assert sidecar.get("/refresh", method="POST")[0] == 403
        wrong = {"Authorization": "Bearer nope"}
        assert sidecar.get("/refresh", method="POST", headers=wrong)[0] == 403
        right = {"Authorization": "Bearer s3cret-token"}
        code, body = sidecar.get("/refresh", method="POST", headers=right)
        assert code == 200
        assert json.loads(body)["outcome"] == "unchanged"
        assert not any("s3cret-token" in line for line in sidecar.lines)
    finally:
        sidecar.stop(signal.SIGKILL)


def test_metrics_describe_what_is_served(started: Sidecar) -> None:
    """/metrics is Prometheus text naming the served version and counting refreshes."""
    started.get("/refresh", method="POST")
    code, body = started.get("/metrics")
    text = body.decode()
    assert code == 200
    assert "pointercache_served_info{" in text and 'version="1"' in text
    assert "pointercache_refreshes_total" in text
    assert "pointercache_staleness_seconds" in text


def test_sidecar_stops_gracefully_on_sigterm(started: Sidecar) -> None:
    """SIGTERM ends the sidecar with exit code 0 and a 'stopping' log line."""
    assert started.stop(signal.SIGTERM) == 0
    assert started.find("stopping") is not None


def test_sidecar_bootstraps_without_an_init_container(
    world: World, cli_env: dict[str, str]
) -> None:
    """A sidecar on an empty volume walks the chain itself and becomes ready."""
    sidecar = Sidecar(cli_env, [*world.common(), *SLOW_POLL])
    try:
        wait_until(lambda: sidecar.get("/readyz")[0] == 200)
        assert version(sidecar) == "1"
    finally:
        sidecar.stop(signal.SIGKILL)


def test_sidecar_not_ready_until_a_model_is_published(
    world: World, cli_env: dict[str, str]
) -> None:
    """Without any source of a model, /readyz answers 503 and /status explains why."""
    world.manifest.unlink()
    sidecar = Sidecar(cli_env, [*world.common(), *SLOW_POLL])
    try:
        wait_until(lambda: sidecar.status()["registry"]["last_error"])
        assert sidecar.get("/readyz")[0] == 503
        assert sidecar.get("/healthz")[0] == 200
    finally:
        sidecar.stop(signal.SIGKILL)


def test_sidecar_blocks_an_incompatible_signature(
    world: World, cli_env: dict[str, str], tmp_path: Path
) -> None:
    """A candidate whose inputs the serving code does not produce is not flipped to."""
    expected = {
        "inputs": [{"name": "amount", "type": "double"}, {"name": "merchant", "type": "string"}]
    }
    sig_ok = {
        "inputs": [
            {"name": "amount", "type": "double", "required": True},
            {"name": "merchant", "type": "string", "required": True},
        ]
    }
    sig_geo = {
        "inputs": [*sig_ok["inputs"], {"name": "geo_lat", "type": "double", "required": True}]
    }
    expect_file = tmp_path / "expect.json"
    expect_file.write_text(json.dumps(expected))
    world.publish(1, "1", signatures={"1": sig_ok, "2": sig_geo})
    args = ["--expect-signature", str(expect_file)]
    assert run_init(cli_env, *world.init_args(*args)).returncode == 0
    sidecar = Sidecar(cli_env, [*world.common(), *SLOW_POLL, *args])
    try:
        world.publish(2, "2", signatures={"1": sig_ok, "2": sig_geo})
        blocked = wait_until(lambda: sidecar.status()["blocked"])
        assert blocked["version"] == "2"
        assert "geo_lat" in json.dumps(blocked["diff"])
        assert version(sidecar) == "1"
        assert "pointercache_signature_blocks_total" in sidecar.get("/metrics")[1].decode()
    finally:
        sidecar.stop(signal.SIGKILL)


def test_sidecar_exits_2_on_bad_configuration(world: World, cli_env: dict[str, str]) -> None:
    """A bad --listen value is a configuration error (exit 2), not a crash."""
    import subprocess

    from tests.e2e.helpers import cli

    proc = subprocess.run(
        cli("sidecar", *world.common(), "--listen", "nowhere"),
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2
    assert "--listen" in proc.stderr


def test_prefetch_stages_the_candidate_without_serving_it(
    world: World, cli_env: dict[str, str]
) -> None:
    """With --prefetch-selector, the candidate is staged next to the current version, not served."""
    from tests.e2e.helpers import write_manifest

    write_manifest(
        world.manifest, world.base, revision=1, aliases={"production": "1", "candidate": "2"}
    )
    assert run_init(cli_env, *world.init_args()).returncode == 0
    args = [*world.common(), *SLOW_POLL, "--prefetch-selector", "alias:candidate"]
    sidecar = Sidecar(cli_env, args)
    try:
        doc = wait_until(lambda: sidecar.status()["prefetched"] and sidecar.status())
        assert doc["prefetched"]["version"] == "2"
        assert doc["current"]["version"] == "1"
        assert sorted(s["version"] for s in doc["staged"]) == ["1", "2"]
        assert Pointer.read(world.root / "pointer.json").version == "1"
        write_manifest(
            world.manifest, world.base, revision=2, aliases={"production": "2", "candidate": "2"}
        )
        wait_until(lambda: version(sidecar) == "2")
        published = sidecar.find("published")
        assert published is not None and published["reused"] is True
    finally:
        sidecar.stop(signal.SIGKILL)


def test_same_bytes_under_a_new_version_flip_without_a_download(
    started: Sidecar, world: World
) -> None:
    """A re-registered model (new version name, identical bytes) reuses the staged files."""
    import shutil

    shutil.copytree(world.base / "artifacts" / "v1", world.base / "artifacts" / "v3")
    world.publish(2, "3")
    wait_until(lambda: version(started) == "3")
    assert Pointer.read(world.root / "pointer.json").version == "3"
    published = started.find("published")
    assert published is not None and published["reused"] is True


def test_a_fallback_at_start_is_counted_and_explained(
    world: World, cli_env: dict[str, str]
) -> None:
    """A volume published from the LKG shows its fallback reason and metric until confirmed."""
    assert run_init(cli_env, *world.init_args()).returncode == 0
    world.manifest.unlink()
    pod2 = world.base / "pod2"
    assert run_init(cli_env, *world.init_args(root=pod2)).returncode == 0
    sidecar = Sidecar(cli_env, [*world.common(root=pod2), *SLOW_POLL])
    try:
        doc = sidecar.status()
        assert doc["current"]["source"] == "lkg-node"
        assert "fell back" in doc["fallback_reason"]
        metrics = sidecar.get("/metrics")[1].decode()
        assert 'pointercache_fallbacks_total{source="lkg-node"} 1.0' in metrics
        world.publish(2, "1")
        sidecar.get("/refresh", method="POST")
        doc = sidecar.status()
        assert (doc["current"]["source"], doc["fallback_reason"]) == ("registry", None)
    finally:
        sidecar.stop(signal.SIGKILL)


def test_a_confirmation_carries_the_revision_forward(started: Sidecar, world: World) -> None:
    """A at 5, A again at 8, then a lagging B at 6: B is refused because 8 is served."""
    world.publish(5, "1")
    started.get("/refresh", method="POST")
    world.publish(8, "1")
    started.get("/refresh", method="POST")
    assert started.status()["current"]["revision"] == 8
    assert Pointer.read(world.root / "pointer.json").revision == 8
    world.publish(6, "2")
    started.get("/refresh", method="POST")
    assert version(started) == "1"
    assert started.find("stale-answer") is not None


def test_a_blocked_version_is_reported_once(
    world: World, cli_env: dict[str, str], tmp_path: Path
) -> None:
    """Polls that keep naming the same refused version do not record or report it again."""
    expect = tmp_path / "expect.json"
    expect.write_text(json.dumps({"inputs": [{"name": "amount", "type": "double"}]}))
    sig_geo = {
        "inputs": [
            {"name": "amount", "type": "double", "required": True},
            {"name": "geo_lat", "type": "double", "required": True},
        ]
    }
    world.publish(1, "1", signatures={"2": sig_geo})
    args = ["--expect-signature", str(expect), "--signature-mode", "subset"]
    assert run_init(cli_env, *world.init_args(*args)).returncode == 0
    sidecar = Sidecar(cli_env, [*world.common(), *SLOW_POLL, *args])
    try:
        world.publish(2, "2", signatures={"2": sig_geo})
        wait_until(lambda: sidecar.status()["blocked"])
        for _ in range(3):
            code, body = sidecar.get("/refresh?wait=30", method="POST", timeout=40)
            assert (code, json.loads(body)["outcome"]) == (200, "blocked")
        events = [e["event"] for e in sidecar.status()["history"]]
        assert events.count("flip-blocked") == 1
        assert version(sidecar) == "1"
    finally:
        sidecar.stop(signal.SIGKILL)
