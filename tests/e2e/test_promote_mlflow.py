"""``pointercache promote`` moves an MLflow alias with a higher revision (real MLflow server)."""

from __future__ import annotations

import subprocess

from pointercache.model.candidate import Selector
from pointercache.resolve.sources import SourceOptions
from pointercache.resolve.sources.mlflow import MlflowSource
from tests.e2e.helpers import cli
from tests.mlflow_server import MlflowServer


def promote(
    env: dict[str, str], server: MlflowServer, model: str, version: str
) -> subprocess.CompletedProcess[str]:
    """``pointercache promote --no-wait`` of ``version`` in the MLflow registry."""
    args = [
        "promote",
        "--model",
        model,
        "--to",
        version,
        "--registry",
        server.registry_uri,
        "-n",
        "ml",
        "-l",
        "app=x",
        "--no-wait",
    ]
    return subprocess.run(
        cli(*args), env=env, capture_output=True, text=True, timeout=60, check=False
    )


async def test_promote_moves_the_mlflow_alias_and_bumps_the_revision(
    mlflow: MlflowServer, cli_env: dict[str, str]
) -> None:
    """After promote --no-wait, the alias names the new version with a higher revision."""
    model = mlflow.new_model("promo")
    v1 = mlflow.create_version(model, {"w.bin": b"1" * 64})
    v2 = mlflow.create_version(model, {"w.bin": b"2" * 64})
    mlflow.set_alias(model, "production", v1)
    source = MlflowSource(mlflow.registry_uri, SourceOptions(timeout=10))
    try:
        before = await source.resolve(model, Selector.parse("alias:production"))
        proc = promote(cli_env, mlflow, model, v2)
        assert proc.returncode == 0, proc.stderr
        assert f"alias production -> version {v2}" in proc.stdout
        after = await source.resolve(model, Selector.parse("alias:production"))
    finally:
        await source.aclose()
    assert (before.version, after.version) == (v1, v2)
    assert after.revision > before.revision


def test_promote_reports_an_unknown_mlflow_version(
    mlflow: MlflowServer, cli_env: dict[str, str]
) -> None:
    """Promoting a version MLflow does not have fails with the registry's reason, exit 1."""
    model = mlflow.new_model("promo")
    mlflow.create_version(model, {"w.bin": b"1" * 64})
    proc = promote(cli_env, mlflow, model, "99")
    assert proc.returncode == 1
    assert "model-versions/get" in proc.stderr
