"""Names a registry accepts work end to end; names none accepts, and contradictory settings,
are refused at start-up with exit 2 (real MLflow, the real CLI)."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pytest

from pointercache.model.pointer import Pointer
from tests.e2e.helpers import Sidecar, cli, run_init
from tests.helpers import free_port
from tests.mlflow_server import MlflowServer


def _mlflow_args(server: MlflowServer, model: str, tmp_path: Path) -> list[str]:
    return [
        "--model", model,
        "--registry", server.registry_uri,
        "--registry-timeout", "10",
        "--root", str(tmp_path / "pod"),
        "--lkg-dir", str(tmp_path / "node"),
        "--allow", f"mlflow-artifacts+http://127.0.0.1:{server.port}/",
    ]  # fmt: skip


def test_a_model_called_credit_risk_is_served_and_refreshed(
    mlflow: MlflowServer, cli_env: dict[str, str], tmp_path: Path
) -> None:
    """A registered model named with a space is published, persisted and flipped like any."""
    model = f"Credit Risk {uuid.uuid4().hex[:6]}"
    mlflow.call("POST", "registered-models/create", {"name": model})
    v1 = mlflow.create_version(model, {"weights.bin": b"1" * 32})
    mlflow.set_alias(model, "production", v1)
    args = _mlflow_args(mlflow, model, tmp_path)
    proc = run_init(cli_env, *args, "--termination-log", str(tmp_path / "term"))
    assert proc.returncode == 0, proc.stderr
    pod = tmp_path / "pod"
    assert Pointer.read(pod / "pointer.json").model == model
    current = str((pod / "current").readlink())
    assert current.startswith("versions/Credit-Risk-") and " " not in current
    (entry,) = (tmp_path / "node").glob("*.json")
    assert entry.name.endswith(".alias-production.json") and " " not in entry.name
    sidecar = Sidecar(cli_env, [*args, "--poll-interval", "3600"])
    try:
        assert sidecar.status()["model"] == model
        v2 = mlflow.create_version(model, {"weights.bin": b"2" * 32})
        mlflow.set_alias(model, "production", v2)
        code, body = sidecar.get("/refresh?wait=60", method="POST")
        assert (code, json.loads(body)["outcome"]) == (200, "flipped"), body
        assert Pointer.read(pod / "pointer.json").version == v2
    finally:
        sidecar.stop()


@pytest.mark.parametrize("name", ["fraud/v2", "fraud:v2", "..fraud", ".", "   ", "a\tb"])
def test_a_name_no_registry_accepts_exits_2_before_any_request(
    cli_env: dict[str, str], tmp_path: Path, name: str
) -> None:
    """'/', ':', leading '..', blank or control characters: exit 2, the registry never asked."""
    with_listener = f"mlflow+http://127.0.0.1:{free_port()}"  # nothing listens: never reached
    proc = run_init(
        cli_env,
        *("--model", name, "--registry", with_listener, "--root", str(tmp_path / "pod")),
        *("--termination-log", str(tmp_path / "term")),
    )
    assert proc.returncode == 2, proc.stderr
    assert "not a model name a registry accepts" in (tmp_path / "term").read_text()
    assert "registry-failed" not in proc.stderr


@pytest.mark.parametrize(
    ("role", "args", "message"),
    [
        (
            "init",
            ["--unsigned-model", "refuse"],
            "--unsigned-model refuse needs --expect-signature",
        ),
        ("init", ["--selector", "alias:has space"], "is not an alias, version or stage name"),
        ("init", ["--selector", "version:latest"], "MLflow versions are integers"),
        ("sidecar", ["--prefetch-selector", "version:abc"], "--prefetch-selector version:abc"),
        ("sidecar", ["--prefetch-selector", "alias:a/b"], "is not an alias, version or stage"),
        ("sidecar", ["--stale-grace", "-1"], "--stale-grace must not be negative"),
    ],
)
def test_contradictory_or_malformed_settings_exit_2(
    cli_env: dict[str, str], tmp_path: Path, role: str, args: list[str], message: str
) -> None:
    """A gate without a signature, a selector MLflow never answers: exit 2 at start-up."""
    registry = f"mlflow+http://127.0.0.1:{free_port()}"
    common = ["--model", "fraud", "--registry", registry, "--root", str(tmp_path / "pod")]
    if role == "sidecar":
        common += ["--listen", "127.0.0.1:0"]
    proc = subprocess.run(
        cli(role, *common, *args),
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
