"""A real model server from PyPI (MLServer, scikit-learn runtime) reloaded by the sidecar's hook.

MLServer serves a scikit-learn model from ``<volume>/model/model.joblib``. The sidecar calls its
model-repository ``load`` endpoint after each flip (``--on-flip-url``); the predictions follow
the published version, and ``/status`` reports what MLServer has loaded, including when the
reload of a broken artifact fails and MLServer keeps serving the previous model.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest

from tests.e2e.helpers import Sidecar, cli, run_init, wait_until, write_manifest
from tests.helpers import MODEL
from tests.mlserver import MLServer, train

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("mlserver")]
LOAD = "/v2/repository/models/{model}/load"


def test_mlserver_reloads_on_the_hook_and_a_failed_reload_stays_visible(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    """v1 serves 1·x; promoting v2 makes the hook reload MLServer (2·x, /status: v2 via hook);
    a corrupt v3 fails the reload: MLServer keeps 2·x and /status shows v2 loaded, v3 failed."""
    train(tmp_path / "artifacts" / "v1", 1.0)
    train(tmp_path / "artifacts" / "v2", 2.0)
    (tmp_path / "artifacts" / "v3").mkdir()
    (tmp_path / "artifacts" / "v3" / "model.joblib").write_bytes(b"not a pickle")
    registry, volume = tmp_path / "registry.json", tmp_path / "volume"
    write_manifest(registry, tmp_path, revision=1, aliases={"production": "1"})
    common = ["--model", MODEL, "--registry", registry.as_uri(), "--root", str(volume)]
    assert run_init(cli_env, *common, "--termination-log", str(tmp_path / "t")).returncode == 0
    server = MLServer.start(tmp_path, MODEL, volume)
    sidecar = None
    try:
        assert server.predict(3.0) == pytest.approx(3.0)
        sidecar = Sidecar(
            cli_env,
            [
                *common,
                "--poll-interval",
                "3600",
                "--on-flip-url",
                server.url + LOAD,
                "--on-flip-timeout",
                "5",
            ],
        )
        acked = subprocess.run(  # a server that is not Python acknowledges with the CLI
            cli("loaded", "--url", sidecar.url, "--root", str(volume)),
            env=cli_env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert acked.returncode == 0, acked.stderr
        write_manifest(registry, tmp_path, revision=2, aliases={"production": "2"})
        wait_until(lambda: (sidecar.status()["loaded"] or {}).get("version") == "2", timeout=60)
        doc = sidecar.status()
        assert doc["loaded"]["via"] == "hook" and doc["loaded"]["current"] is True
        assert doc["reload"]["flip_to_loaded_seconds"] > 0
        assert server.predict(3.0) == pytest.approx(6.0)
        write_manifest(registry, tmp_path, revision=3, aliases={"production": "3"})
        wait_until(lambda: sidecar.status()["reload"]["state"] == "failed", timeout=60)
        doc = sidecar.status()
        assert doc["current"]["version"] == "3"
        assert doc["loaded"]["version"] == "2" and doc["loaded"]["current"] is False
        assert "HTTP 500" in doc["reload"]["error"]
        assert server.predict(3.0) == pytest.approx(6.0)
        metrics = sidecar.get("/metrics")[1].decode()
        assert "pointercache_reload_failures_total 1.0" in metrics
        assert "pointercache_loaded_info{" in metrics and 'version="2"' in metrics
    finally:
        if sidecar is not None:
            sidecar.stop(signal.SIGKILL)
        server.stop()
