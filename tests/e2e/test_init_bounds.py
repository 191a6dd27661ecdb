"""The init container against stalls, planted node files, held locks and crashes: real processes.

Each case is a real ``pointercache init`` subprocess against real loopback servers, FIFOs, held
``flock``s and a full tmpfs. ``--deadline`` is a promise: the process exits by it (a second of
slack for the exit, a few more for starting the interpreter on a busy machine), published or
with one line in the termination log, and never with a traceback.
"""

from __future__ import annotations

import asyncio
import json
import os
import tarfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from subprocess import CompletedProcess
from typing import Any

import pytest

from pointercache.model.digest import tree_digest
from pointercache.model.pointer import Pointer
from pointercache.volume.fsutil import atomic_write_bytes
from tests.e2e.conftest import World
from tests.e2e.helpers import ENTRY, MODEL, run_init
from tests.helpers import fill, held_flock, make_pointer, mount_tmpfs, unmount
from tests.stage.mlflow_proxy import Proxy, start_proxy
from tests.stage.origin import Origin, trickling_origin
from tests.stage.test_archive import chained_headers

STARTUP_SLACK = 4.0
"""Seconds allowed for starting the interpreter on a busy machine (the deadline counts from the
moment settings are parsed); the exit itself must come within a second of the deadline."""


@pytest.fixture
async def origin() -> AsyncIterator[Origin]:
    """A misbehaving HTTP origin; its trickle sends a byte every 2 s, as in the report."""
    async with trickling_origin(2.0) as server:
        yield server


def answer(world: World, revision: int, uri: str, **entry: Any) -> None:
    """The registry names version 2 at ``uri`` (v1 stays listed as it was)."""
    doc = json.loads(world.manifest.read_text()) if world.manifest.exists() else None
    versions = doc["versions"] if doc else {}
    versions["2"] = {"uri": uri, **entry}
    new = {
        "schema": 1,
        "model": MODEL,
        "revision": revision,
        "aliases": {"production": "2"},
        "versions": versions,
    }
    atomic_write_bytes(world.manifest, json.dumps(new).encode())


def pinned(world: World) -> list[str]:
    """Flags pinning v1 by URI and digest."""
    art = world.base / "artifacts" / "v1"
    return ["--pinned-version", "1", "--pinned-uri", art.as_uri(), "--pinned-digest", digest(art)]


def digest(path: Path) -> str:
    """The artifact digest of ``path``."""
    return tree_digest(path)[0]


async def timed_init(env: dict[str, str], *args: str) -> tuple[CompletedProcess[str], float]:
    """Run init off the event loop (servers of this test run on it); (result, seconds)."""
    started = time.monotonic()
    proc = await asyncio.to_thread(run_init, env, *args, timeout=120)
    return proc, time.monotonic() - started


def served(root: Path) -> Pointer:
    """The published pointer, after checking the model files match its digest."""
    pointer = Pointer.read(root / "pointer.json")
    assert tree_digest(root / "model")[0] == pointer.digest
    return pointer


def no_traceback(proc: CompletedProcess[str]) -> None:
    """Nothing a user reads holds a Python traceback."""
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout


async def test_a_trickling_artifact_is_abandoned_and_the_node_lkg_serves(
    world: World, cli_env: dict[str, str], origin: Origin
) -> None:
    """v2 trickles (a byte every 2 s): init --deadline 10 gives it half, then serves the LKG."""
    assert (await timed_init(cli_env, *world.init_args()))[0].returncode == 0
    answer(world, 2, origin.url("/trickle"))
    allow = ["--allow", origin.url("/"), "--allow", world.base.as_uri()]
    proc, took = await timed_init(
        cli_env,
        *world.init_args("--deadline", "10", *allow, *pinned(world), root=world.base / "p2"),
    )
    assert proc.returncode == 0, proc.stderr
    no_traceback(proc)
    pointer = served(world.base / "p2")
    assert (pointer.version, pointer.source) == ("1", "lkg-node")
    assert "version 2 abandoned after" in pointer.source_detail
    assert "of 10.0 MiB" in pointer.source_detail
    assert took < 10 + 1 + STARTUP_SLACK


async def test_a_stall_with_nothing_to_fall_back_to_fails_by_the_deadline(
    world: World, cli_env: dict[str, str], origin: Origin
) -> None:
    """Only the trickling candidate: exit 1 by the deadline with one line naming the stall."""
    answer(world, 2, origin.url("/trickle"))
    proc, took = await timed_init(
        cli_env, *world.init_args("--deadline", "6", "--allow", origin.url("/"))
    )
    assert proc.returncode == 1
    no_traceback(proc)
    reason = world.term.read_text()
    assert reason.count("\n") == 1
    assert "version 2 abandoned after" in reason
    assert not (world.root / "pointer.json").exists()
    assert took < 6 + 1 + STARTUP_SLACK


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _zero(path: Path) -> None:
    path.symlink_to("/dev/zero")


def _not_json(path: Path) -> None:
    path.write_text("{not json")


def _other_model(path: Path) -> None:
    path.write_bytes(make_pointer(model="fraud").to_json())


BAD_LKG: dict[str, tuple[Callable[[Path], None], str]] = {
    "fifo": (_fifo, "a FIFO"),
    "link to /dev/zero": (_zero, "symbolic link"),
    "not json": (_not_json, "not valid JSON"),
    "another model's pointer": (_other_model, "'fraud'"),
}


@pytest.mark.parametrize("kind", BAD_LKG)
async def test_a_bad_node_lkg_is_skipped_and_the_registry_serves(
    world: World, cli_env: dict[str, str], kind: str
) -> None:
    """A FIFO, link, broken or foreign file as the node LKG: the registry's answer is served,
    the skip named in source_detail; with the registry gone, the pinned version is."""
    plant, reason = BAD_LKG[kind]
    world.lkg.mkdir(parents=True)
    plant(world.lkg / ENTRY)
    proc, took = await timed_init(cli_env, *world.init_args("--deadline", "5"))
    assert proc.returncode == 0, proc.stderr
    no_traceback(proc)
    pointer = served(world.root)
    assert (pointer.version, pointer.source) == ("1", "registry")
    assert "lkg-node skipped" in pointer.source_detail and reason in pointer.source_detail
    assert Pointer.read(world.lkg / ENTRY).version == "1"  # replaced by a good one
    assert took < 5 + 1 + STARTUP_SLACK

    (world.lkg / ENTRY).unlink()
    plant(world.lkg / ENTRY)
    world.manifest.unlink()
    pod = world.base / "p2"
    proc, _ = await timed_init(
        cli_env, *world.init_args("--deadline", "5", *pinned(world), root=pod)
    )
    assert proc.returncode == 0, proc.stderr
    pointer = served(pod)
    assert pointer.source == "pinned"
    assert reason in pointer.source_detail


async def test_held_node_locks_cost_bounded_waits(world: World, cli_env: dict[str, str]) -> None:
    """Another process holds the model's LKG lock and the digest's cache lock: init --deadline 5
    publishes the registry's answer and exits within the deadline."""
    art = world.base / "artifacts" / "v1"
    locks = world.lkg / ".locks"
    with (
        held_flock(locks / f"lkg-{ENTRY}.lock"),
        held_flock(locks / f"sha256-{digest(art).removeprefix('sha256:')}.lock"),
    ):
        proc, took = await timed_init(cli_env, *world.init_args("--deadline", "5"))
    assert proc.returncode == 0, proc.stderr
    no_traceback(proc)
    assert served(world.root).source == "registry"
    assert "cache-lock-busy" in proc.stderr
    assert "lkg-write-failed" in proc.stderr or "after-publish-abandoned" in proc.stderr
    assert took < 5 + 1 + STARTUP_SLACK


@pytest.fixture
async def proxy() -> AsyncIterator[Proxy]:
    """An MLflow artifact proxy whose listing names ``w.bin`` twice."""
    server = Proxy(listings=lambda _path: [{"path": "w.bin", "is_dir": False}] * 2)
    runner = await start_proxy(server)
    try:
        yield server
    finally:
        await runner.cleanup()


async def test_crashes_inside_a_candidate_fall_through_to_pinned(
    world: World, cli_env: dict[str, str], proxy: Proxy
) -> None:
    """A bracketed IPv4 URI, a tar of 600 chained headers, an MLflow listing with a duplicate:
    each is a one-line reason and the pinned version is served, never a traceback."""
    tar = chained_headers(world.base / "chain.tar", 600, tarfile.GNUTYPE_LONGNAME)
    cases = {
        "http://[127.0.0.1]/m.bin": "ForbiddenURI",
        tar.as_uri(): "UnsafeArchive",
        proxy.uri("1/x/model"): "listed twice",
    }
    allow = [
        "--allow",
        world.base.as_uri(),
        "--allow",
        f"mlflow-artifacts+http://127.0.0.1:{proxy.port}/",
    ]
    for index, (uri, reason) in enumerate(cases.items()):
        answer(world, 10 + index, uri)
        pod = world.base / f"pod-{index}"
        proc, _ = await timed_init(
            cli_env, *world.init_args("--deadline", "20", *allow, *pinned(world), root=pod)
        )
        assert proc.returncode == 0, (uri, proc.stderr)
        no_traceback(proc)
        pointer = served(pod)
        assert pointer.source == "pinned", uri
        assert reason in pointer.source_detail, (uri, pointer.source_detail)


@pytest.fixture
def small_root(tmp_path: Path) -> Any:
    """A 2 MiB tmpfs for the shared volume (real ENOSPC)."""
    mnt = tmp_path / "small"
    why = mount_tmpfs(mnt, 2 << 20)
    if why:
        pytest.skip(f"{why}; the injected disk-full tests in tests/volume run instead")
    yield mnt
    unmount(mnt)


async def test_a_full_volume_while_copying_a_file_artifact_falls_through(
    world: World, cli_env: dict[str, str], small_root: Path
) -> None:
    """ENOSPC while installing a 4 MiB file:// artifact: the small pinned version is served."""
    big = world.base / "artifacts" / "big.bin"
    big.write_bytes(os.urandom(4 << 20))
    answer(world, 2, big.as_uri())
    proc, _ = await timed_init(
        cli_env, *world.init_args("--deadline", "20", *pinned(world), root=small_root / "pod")
    )
    assert proc.returncode == 0, proc.stderr
    no_traceback(proc)
    pointer = served(small_root / "pod")
    assert pointer.source == "pinned"
    assert "ENOSPC" in pointer.source_detail


@pytest.fixture
def small_lkg(tmp_path: Path) -> Any:
    """A node directory on a 1 MiB tmpfs."""
    mnt = tmp_path / "node"
    why = mount_tmpfs(mnt, 1 << 20)
    if why:
        pytest.skip(f"{why}; the injected disk-full tests in tests/volume run instead")
    yield mnt
    unmount(mnt)


async def test_a_full_node_disk_is_a_warning_after_the_flip(
    world: World, cli_env: dict[str, str], small_lkg: Path
) -> None:
    """The node LKG cannot be written (ENOSPC): init publishes, exits 0, and says so."""
    fill(small_lkg)
    proc, _ = await timed_init(cli_env, *world.init_args(lkg=small_lkg))
    assert proc.returncode == 0, proc.stderr
    no_traceback(proc)
    assert served(world.root).source == "registry"
    assert "lkg-write-failed" in proc.stderr and "ENOSPC" in proc.stderr
