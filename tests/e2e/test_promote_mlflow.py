"""``pointercache promote`` moves an MLflow alias with a higher revision (real MLflow server)."""

from __future__ import annotations

import asyncio
import base64
import subprocess
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from pointercache.model.candidate import Selector
from pointercache.resolve.sources import SourceOptions
from pointercache.resolve.sources.mlflow import MlflowSource
from tests.e2e.helpers import cli
from tests.mlflow_server import MlflowServer


def promote(
    env: dict[str, str],
    server: MlflowServer,
    model: str,
    version: str,
    *extra: str,
    registry: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """``pointercache promote --no-wait`` of ``version`` in the MLflow registry (no -n/-l)."""
    args = [
        "promote",
        "--model",
        model,
        "--to",
        version,
        "--registry",
        registry or server.registry_uri,
        "--no-wait",
        *extra,
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


def test_promote_keeps_the_revision_moving_when_the_clock_is_behind(
    mlflow: MlflowServer, cli_env: dict[str, str]
) -> None:
    """A tag set from a clock a day ahead still goes up: the new revision is the tag plus one."""
    model = mlflow.new_model("promo")
    v1 = mlflow.create_version(model, {"w.bin": b"1" * 64})
    ahead = str(time.time_ns() // 1_000_000 + 86_400_000)
    mlflow.set_model_tag(model, "pointercache.revision", ahead)
    proc = promote(cli_env, mlflow, model, v1)
    assert proc.returncode == 0, proc.stderr
    assert f"(revision {int(ahead) + 1})" in proc.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "m", "--to", "2"], "-n/-l are required unless --no-wait"),
        (["--model", "m", "--to", "2", "--no-wait"], "--no-wait needs --registry"),
        (
            [
                *("--model", "m", "--to", "2", "--no-wait", "--registry", "file:///m.json"),
                *("--registry-basic-auth-file", "/nonexistent"),
            ],
            "--registry-basic-auth-file /nonexistent: not a readable file",
        ),
        (
            [
                *("--model", "m", "--to", "2", "--no-wait", "--registry", "file:///m.json"),
                *("--wait", "loaded"),
            ],
            "--wait loaded needs -n/-l",
        ),
    ],
)
def test_promote_flag_errors_exit_2(cli_env: dict[str, str], args: list[str], message: str) -> None:
    """Missing -n/-l (when waiting, for the stage or the load), --no-wait without a registry, a
    missing secret: exit 2."""
    proc = subprocess.run(
        cli("promote", *args), env=cli_env, capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 2
    assert message.replace("-n/-l", "--namespace/-n and --selector/-l") in proc.stderr


async def test_promote_sends_basic_auth_to_mlflow(
    mlflow: MlflowServer, cli_env: dict[str, str], tmp_path: Path
) -> None:
    """--registry-basic-auth-file sends user:password to MLflow (seen by a forwarding proxy)."""
    model = mlflow.new_model("promo")
    v1 = mlflow.create_version(model, {"w.bin": b"1" * 64})
    secret = tmp_path / "basic"
    secret.write_text("ops:s3cret\n")
    seen: list[str] = []

    async def forward(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        async with (
            aiohttp.ClientSession() as session,
            session.request(
                request.method,
                f"{mlflow.url}{request.path_qs}",
                data=await request.read(),
                headers={"Content-Type": request.headers.get("Content-Type", "application/json")},
            ) as answer,
        ):
            return web.Response(status=answer.status, body=await answer.read())

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", forward)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        proc = await asyncio.to_thread(
            promote,
            cli_env,
            mlflow,
            model,
            v1,
            "--registry-basic-auth-file",
            str(secret),
            registry=f"mlflow+http://127.0.0.1:{port}",
        )
    finally:
        await runner.cleanup()
    assert proc.returncode == 0, proc.stderr
    expected = "Basic " + base64.b64encode(b"ops:s3cret").decode()
    assert seen and set(seen) == {expected}
    assert "s3cret" not in proc.stdout + proc.stderr
