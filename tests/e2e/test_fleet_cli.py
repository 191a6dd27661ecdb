"""``pointercache fleet`` and ``pointercache promote`` as real processes against kmock."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import kmock
import pytest

from tests.e2e.conftest import World
from tests.e2e.helpers import cli
from tests.fleet.test_view import D8, D9, add_pod, mark


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[tuple[kmock.KubernetesEmulator, Path]]:
    """kmock's emulator on 127.0.0.1 and a kubeconfig file that points at it."""
    async with kmock.KubernetesEmulator() as handler, kmock.Server(handler) as server:
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "current-context": "t",
                    "clusters": [{"name": "t", "cluster": {"server": str(server.url).rstrip("/")}}],
                    "users": [{"name": "t", "user": {}}],
                    "contexts": [{"name": "t", "context": {"cluster": "t", "user": "t"}}],
                }
            )
        )
        yield handler, kubeconfig


async def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI in a thread so kmock keeps serving on this event loop."""
    return await asyncio.to_thread(
        subprocess.run,
        cli(*args),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def promote(
    env: dict[str, str], world: World, version: str, *extra: str
) -> subprocess.CompletedProcess[str]:
    """``pointercache promote`` of ``version`` into the world's manifest, pods app=rec in ml."""
    return await run(
        env,
        "promote",
        "--model",
        "recommender",
        "--to",
        version,
        "--registry",
        world.manifest.as_uri(),
        "-n",
        "ml",
        "-l",
        "app=rec",
        *extra,
    )


async def test_fleet_shows_pods_and_gates_on_skew(api, cli_env: dict[str, str]) -> None:
    """Two ready pods on different versions: the table shows both; --max-skew 0 exits 1."""
    handler, kubeconfig = api
    add_pod(handler, "rec-a")
    add_pod(handler, "rec-b", version="9", digest=D9, staged="8,9", source="lkg-node")
    env = cli_env | {"KUBECONFIG": str(kubeconfig)}
    shown = await run(env, "fleet", "-n", "ml", "-l", "app=rec")
    assert shown.returncode == 0, shown.stderr
    assert "rec-a" in shown.stdout and "rec-b" in shown.stdout and "lkg-node" in shown.stdout
    gated = await run(env, "fleet", "-n", "ml", "-l", "app=rec", "--max-skew", "0")
    assert gated.returncode == 1
    assert "skew 1 (by published) exceeds --max-skew 0" in gated.stderr
    rows = json.loads((await run(env, "fleet", "-n", "ml", "-l", "app=rec", "--json")).stdout)
    assert {r["pod"]: r["version"] for r in rows} == {"rec-a": "8", "rec-b": "9"}


async def test_promote_moves_the_alias_once_every_pod_has_the_candidate(
    api, world: World, cli_env: dict[str, str]
) -> None:
    """With version 2 staged on every ready pod, promote moves production and bumps revision."""
    handler, kubeconfig = api
    add_pod(handler, "rec-a", staged="1,2", version="1", digest=D8)
    add_pod(handler, "rec-b", staged="1,2", version="1", digest=D8)
    add_pod(handler, "rec-c", ready=False, staged="1", version="1", digest=D8)
    env = cli_env | {"KUBECONFIG": str(kubeconfig)}
    proc = await promote(env, world, "2", "--timeout", "10")
    assert proc.returncode == 0, proc.stderr
    assert "not ready: rec-c" in proc.stdout
    doc = json.loads(world.manifest.read_text())
    assert (doc["aliases"]["production"], doc["revision"]) == ("2", 2)


async def test_promote_times_out_and_moves_nothing(
    api, world: World, cli_env: dict[str, str]
) -> None:
    """A ready pod without the candidate staged: promote names it, exits 1, alias unchanged."""
    handler, kubeconfig = api
    add_pod(handler, "rec-a", staged="1,2", version="1", digest=D8)
    add_pod(handler, "rec-b", staged="1", version="1", digest=D8)
    env = cli_env | {"KUBECONFIG": str(kubeconfig)}
    proc = await promote(env, world, "2", "--timeout", "3")
    assert proc.returncode == 1
    assert "missing on: rec-b" in proc.stdout
    doc = json.loads(world.manifest.read_text())
    assert (doc["aliases"]["production"], doc["revision"]) == ("1", 1)


async def test_promote_refuses_an_unknown_version(
    api, world: World, cli_env: dict[str, str]
) -> None:
    """Promoting a version the manifest does not list fails without changing it."""
    _, kubeconfig = api
    env = cli_env | {"KUBECONFIG": str(kubeconfig)}
    proc = await promote(env, world, "9", "--no-wait")
    assert proc.returncode == 1
    assert "version '9' is not in" in proc.stderr
    assert json.loads(world.manifest.read_text())["revision"] == 1


async def test_fleet_counts_skew_on_loaded_versions_and_names_the_laggard(
    api, cli_env: dict[str, str]
) -> None:
    """Both pods publish 9 but one model container still serves 8: skew 1 by loaded (the
    default once loads are reported), 0 by published; the laggard is named."""
    handler, kubeconfig = api
    add_pod(handler, "rec-a", version="9", digest=D9, loaded=mark("9", D9))
    add_pod(handler, "rec-b", version="9", digest=D9, loaded=mark("8", D8))
    env = cli_env | {"KUBECONFIG": str(kubeconfig)}
    gated = await run(env, "fleet", "-n", "ml", "-l", "app=rec", "--max-skew", "0")
    assert gated.returncode == 1, gated.stderr
    assert "not loaded: rec-b (loaded 8, published 9)" in gated.stdout
    assert "skew 1 (by loaded) exceeds" in gated.stderr
    published = await run(
        env, "fleet", "-n", "ml", "-l", "app=rec", "--max-skew", "0", "--by", "published"
    )
    assert published.returncode == 0, published.stderr


async def test_promote_waits_for_loads_and_names_who_did_not_reload(
    api, world: World, cli_env: dict[str, str]
) -> None:
    """--wait loaded moves the alias once staged, then exits 1 naming the pod whose model
    container has not loaded the new version; once it has, promote --wait loaded exits 0."""
    handler, kubeconfig = api
    add_pod(handler, "rec-a", staged="1,2", version="2", digest=D9, loaded=mark("2", D9))
    add_pod(handler, "rec-b", staged="1,2", version="2", digest=D9, loaded=mark("1", D8))
    env = cli_env | {"KUBECONFIG": str(kubeconfig)}
    proc = await promote(env, world, "2", "--timeout", "2", "--wait", "loaded")
    assert proc.returncode == 1, proc.stderr
    assert "version 2 NOT loaded on 1 ready pod(s); missing on: rec-b" in proc.stdout
    assert json.loads(world.manifest.read_text())["aliases"]["production"] == "2"
    add_pod(handler, "rec-b", staged="1,2", version="2", digest=D9, loaded=mark("2", D9))
    again = await promote(env, world, "2", "--timeout", "10", "--wait", "loaded")
    assert again.returncode == 0, again.stderr
    assert "version 2 loaded on 2 ready pod(s)" in again.stdout
