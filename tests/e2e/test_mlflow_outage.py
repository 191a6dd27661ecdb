"""Init and sidecar against a real MLflow server that goes away and comes back."""

from __future__ import annotations

import signal
from pathlib import Path

from pointercache.model.pointer import Pointer
from tests.e2e.helpers import Sidecar, run_init, wait_until
from tests.mlflow_server import MlflowServer


def test_mlflow_outage_and_recovery(
    mlflow_outage: MlflowServer, cli_env: dict[str, str], tmp_path: Path
) -> None:
    """Down: the sidecar keeps serving and says why, a new pod starts from the node LKG.

    Back: the next refresh converges and the pointer is confirmed by the registry again.
    """
    server = mlflow_outage
    model = server.new_model("rec")
    v1 = server.create_version(model, {"weights.bin": b"one" * 1000})
    server.set_alias(model, "production", v1)
    lkg = tmp_path / "lkg"

    def args(root: Path) -> list[str]:
        return [
            "--model",
            model,
            "--registry",
            server.registry_uri,
            "--root",
            str(root),
            "--lkg-dir",
            str(lkg),
            "--allow",
            f"mlflow-artifacts+{server.url}",
            "--registry-timeout",
            "3",
        ]

    init = run_init(cli_env, *args(tmp_path / "pod1"), "--termination-log", str(tmp_path / "term"))
    assert init.returncode == 0, init.stderr
    sidecar = Sidecar(cli_env, [*args(tmp_path / "pod1"), "--poll-interval", "0.5"])
    try:
        v2 = server.create_version(model, {"weights.bin": b"two" * 1000})
        server.set_alias(model, "production", v2)
        wait_until(lambda: sidecar.status()["current"]["version"] == v2, 60)

        server.stop()
        wait_until(lambda: sidecar.status()["registry"]["last_error"], 30)
        assert sidecar.status()["current"]["version"] == v2
        assert sidecar.get("/readyz")[0] == 200

        pod2 = tmp_path / "pod2"
        fresh = run_init(cli_env, *args(pod2), "--termination-log", str(tmp_path / "term2"))
        assert fresh.returncode == 0, fresh.stderr
        pointer = Pointer.read(pod2 / "pointer.json")
        assert (pointer.version, pointer.source) == (v2, "lkg-node")

        server.start()
        wait_until(lambda: sidecar.status()["registry"]["last_error"] is None, 120)
        doc = sidecar.status()
        assert (doc["current"]["version"], doc["current"]["source"]) == (v2, "registry")
    finally:
        sidecar.stop(signal.SIGTERM)
