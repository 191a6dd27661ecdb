"""The example model server: ready only with a model, hot reloads, keeps serving on a bad one."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.conftest import REPO
from tests.e2e.helpers import Sidecar, run_init
from tests.helpers import MODEL, make_artifact, wait_until, write_manifest
from tests.image.conftest import linear_model, publish

sys.path.insert(0, str(REPO / "examples"))
from model_server.model import LinearModel, ModelError, load


def server_argv(root: Path) -> list[str]:
    """The example server from the dev virtualenv, on a free loopback port."""
    return [sys.executable, "-m", "model_server", f"--root={root}", "--listen=127.0.0.1:0"]


def server_env(tmp_path: Path) -> dict[str, str]:
    """The dev environment with examples/ importable."""
    return {**os.environ, "PYTHONPATH": str(REPO / "examples"), "HOME": str(tmp_path)}


def version_is(expected: str) -> Any:
    """A wait_for predicate: /model serves ``expected``."""
    return lambda status, body: status == 200 and body["pointer"]["version"] == expected


def test_ready_only_once_a_model_is_loaded(tmp_path: Path, start_server: Any) -> None:
    """Live at once, ready and predicting only after the first version is published."""
    root = tmp_path / "pc"
    server = start_server(server_argv(root), server_env(tmp_path))
    assert server.get("/health/live") == (200, {"status": "alive"})
    status, body = server.get("/health/ready")
    assert status == 503 and body["status"] == "loading"
    assert server.post("/predict", b'{"features": {"a": 1}}')[0] == 503
    publish(root, "1", linear_model({"a": 2.0}, 1.0))
    server.wait_for("/health/ready", lambda status, _body: status == 200)
    status, body = server.post("/predict", b'{"features": {"a": 3}}')
    assert status == 200
    assert body == {"prediction": 7.0, "model": "demo", "version": "1", "digest": body["digest"]}
    assert body["digest"].startswith("sha256:")


def test_hot_reloads_each_published_version(tmp_path: Path, start_server: Any) -> None:
    """A newly published version replaces the served one without a restart."""
    root = tmp_path / "pc"
    publish(root, "1", linear_model({"a": 1.0}, 0.0))
    server = start_server(server_argv(root), server_env(tmp_path))
    server.wait_for("/model", version_is("1"))
    second = publish(root, "2", linear_model({"a": 10.0}, 0.5))
    body = server.wait_for("/model", version_is("2"))
    assert body["pointer"]["digest"] == second.digest
    status, prediction = server.post("/predict", b'{"features": {"a": 2}}')
    assert (status, prediction["prediction"], prediction["version"]) == (200, 20.5, "2")
    assert server.stop() == 0


def test_a_bad_version_keeps_the_previous_one_serving(tmp_path: Path, start_server: Any) -> None:
    """A version that does not load is reported, and the loaded model keeps serving."""
    root = tmp_path / "pc"
    publish(root, "1", linear_model({"a": 1.0}, 0.0))
    server = start_server(server_argv(root), server_env(tmp_path))
    server.wait_for("/model", version_is("1"))
    publish(root, "2", b'{"kind": "tree"}')
    body = server.wait_for("/model", lambda status, body: body.get("last_error"))
    assert body["pointer"]["version"] == "1"
    assert "version 2" in body["last_error"]
    assert server.get("/health/ready")[0] == 200


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b'{"features": {"b": 1}}', "features.a: expected a number"),
        (b'{"features": {"a": "1"}}', "features.a: expected a number"),
        (b"[1, 2]", "body: expected"),
        (b"not json", "body: not valid JSON"),
    ],
)
def test_predict_rejects_bad_requests(
    tmp_path: Path, start_server: Any, payload: bytes, message: str
) -> None:
    """A malformed request gets 400 and a message naming the problem."""
    root = tmp_path / "pc"
    publish(root, "1", linear_model({"a": 1.0}, 0.0))
    server = start_server(server_argv(root), server_env(tmp_path))
    server.wait_for("/health/ready", lambda status, _body: status == 200)
    status, body = server.post("/predict", payload)
    assert status == 400
    assert message in body["error"]


def test_loads_a_directory_artifact_holding_model_json(tmp_path: Path) -> None:
    """An artifact directory with model.json loads like the single file."""
    (tmp_path / "model.json").write_bytes(linear_model({"x": 0.5}, 1))
    assert load(tmp_path) == LinearModel(weights={"x": 0.5}, bias=1.0)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"{", "not valid JSON"),
        (orjson.dumps({"kind": "linear", "weights": {}}), "non-empty"),
        (orjson.dumps({"kind": "linear", "weights": {"a": True}}), "model.weights.a"),
        (orjson.dumps({"kind": "linear", "weights": {"a": 1}, "bias": "0"}), "model.bias"),
    ],
)
def test_refuses_malformed_models(tmp_path: Path, data: bytes, message: str) -> None:
    """A malformed model file raises ModelError naming the field."""
    (tmp_path / "m.json").write_bytes(data)
    with pytest.raises(ModelError, match=message):
        load(tmp_path / "m.json")


def test_the_example_server_acknowledges_each_load_to_a_real_sidecar(
    tmp_path: Path, start_server: Any, cli_env: dict[str, str]
) -> None:
    """With --ack-url the sidecar (--ready-when loaded) becomes ready once the server loaded v1,
    then sees v2 loaded via ack; a v3 the server cannot load is never acknowledged: the reload
    fails after --on-flip-timeout and /status still shows v2 loaded."""
    registry = tmp_path / "registry.json"
    for version, data in (
        ("1", linear_model({"a": 1.0}, 0.0)),
        ("2", linear_model({"a": 2.0}, 0.0)),
        ("3", b'{"kind": "tree"}'),
    ):
        make_artifact(tmp_path, version, files={"model.json": data})
    write_manifest(registry, tmp_path, revision=1, aliases={"production": "1"})
    common = ["--model", MODEL, "--registry", registry.as_uri(), "--root", str(tmp_path / "pc")]
    assert run_init(cli_env, *common, "--termination-log", str(tmp_path / "term")).returncode == 0
    sidecar = Sidecar(
        cli_env,
        [*common, "--poll-interval", "3600", "--ready-when", "loaded", "--on-flip-timeout", "2"],
    )
    try:
        assert sidecar.get("/readyz")[0] == 503
        server = start_server(
            [*server_argv(tmp_path / "pc"), f"--ack-url={sidecar.url}"], server_env(tmp_path)
        )
        wait_until(lambda: sidecar.get("/readyz")[0] == 200)
        assert sidecar.status()["loaded"]["version"] == "1"
        write_manifest(registry, tmp_path, revision=2, aliases={"production": "2"})
        loaded = wait_until(lambda: (sidecar.status()["loaded"] or {}).get("version") == "2")
        assert loaded
        doc = sidecar.status()
        assert doc["loaded"]["via"] == "ack" and doc["reload"]["state"] == "loaded"
        assert server.post("/predict", b'{"features": {"a": 3}}')[1]["prediction"] == 6.0
        write_manifest(registry, tmp_path, revision=3, aliases={"production": "3"})
        wait_until(lambda: sidecar.status()["reload"]["state"] == "failed", timeout=30)
        doc = sidecar.status()
        assert doc["current"]["version"] == "3"
        assert doc["loaded"]["version"] == "2" and doc["loaded"]["current"] is False
        assert "not loaded within 2s" in doc["reload"]["error"]
        assert sidecar.get("/readyz")[0] == 200  # still serving a verified model: v2
    finally:
        sidecar.stop(signal.SIGKILL)
