"""The sidecar against a trickling store, a planted node LKG, a full node disk and a version
that never verifies: real processes, real sockets, a real tmpfs.

A refresh only resolves; downloads run in the background, so the status server answers and a
newer answer pre-empts a download that stalls.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from pointercache.model.digest import tree_digest
from pointercache.model.pointer import Pointer
from pointercache.volume.fsutil import atomic_write_bytes
from tests.e2e.conftest import World
from tests.e2e.helpers import ENTRY, MODEL, Sidecar, cli, make_artifact, run_init, wait_until
from tests.helpers import fill, mount_tmpfs, unmount
from tests.stage.origin import Origin, trickling_origin

TRICKLE_BYTES = 10 << 20


@pytest.fixture
async def origin() -> AsyncIterator[Origin]:
    """A misbehaving HTTP origin whose trickle sends a byte every 2 s."""
    async with trickling_origin(2.0) as server:
        yield server


def entry(path: Path) -> dict[str, Any]:
    """A manifest entry for a local artifact, with its digest and size."""
    digest, size = tree_digest(path)
    return {"uri": path.as_uri(), "digest": digest, "size_bytes": size}


def publish(world: World, revision: int, production: str, versions: dict[str, Any]) -> None:
    """Rewrite the registry's manifest (versions 1 and ``versions``)."""
    doc = {
        "schema": 1,
        "model": MODEL,
        "revision": revision,
        "aliases": {"production": production},
        "versions": {"1": entry(world.base / "artifacts" / "v1"), **versions},
    }
    atomic_write_bytes(world.manifest, json.dumps(doc).encode())


def answers_within(sidecar: Sidecar, path: str, seconds: float) -> int:
    """The status of ``GET path``; fails the test if it takes more than ``seconds``."""
    code, _ = sidecar.get(path, timeout=seconds)
    return code


def start(env: dict[str, str], world: World, *extra: str, lkg: Path | None = None) -> Sidecar:
    """Publish v1 with init, then start a sidecar polling every second."""
    assert run_init(env, *world.init_args(lkg=lkg)).returncode == 0
    return Sidecar(env, [*world.common(lkg=lkg), "--poll-interval", "1", *extra])


def in_flight(sidecar: Sidecar) -> dict[str, Any] | None:
    """The download /status shows in flight."""
    flight: dict[str, Any] | None = sidecar.status()["in_flight"]
    return flight


@pytest.mark.slow
async def test_a_newer_answer_preempts_a_trickling_download(
    world: World, cli_env: dict[str, str], origin: Origin
) -> None:
    """v2 trickles; /refresh answers at once, /status shows the download; v3 pre-empts it."""
    allow = ["--allow", origin.url("/"), "--allow", world.base.as_uri()]
    sidecar = await asyncio.to_thread(start, cli_env, world, *allow)
    try:
        trickle = {"uri": origin.url("/trickle")}
        publish(world, 2, "2", {"2": trickle})
        flight = await asyncio.to_thread(
            wait_until, lambda: (f := in_flight(sidecar)) and f["bytes"] >= 1024 and f, 30
        )
        assert (flight["version"], flight["total"], flight["phase"]) == (
            "2",
            TRICKLE_BYTES,
            "downloading",
        )
        assert flight["rate_bytes_per_s"] >= 0 and flight["idle_s"] >= 0
        table = await asyncio.to_thread(
            subprocess.run,
            cli("status", "--url", sidecar.url),
            env=cli_env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        rows = dict(line.split(None, 1) for line in table.stdout.splitlines() if " " in line)
        assert (
            rows["in-flight"].startswith("2 downloading")
            and str(TRICKLE_BYTES) in rows["in-flight"]
        )
        started = time.monotonic()
        code, body = await asyncio.to_thread(sidecar.get, "/refresh", method="POST", timeout=5)
        assert time.monotonic() - started < 5  # a bound on the wait, not a timing claim
        answer = json.loads(body)
        assert (code, answer["outcome"], answer["in_flight"]["version"]) == (
            202,
            "in-progress",
            "2",
        )
        for path in ("/healthz", "/readyz", "/status"):
            assert await asyncio.to_thread(answers_within, sidecar, path, 1.0) == 200
        await asyncio.sleep(max(0.0, 8 - (time.monotonic() - started)))
        make_artifact(world.base, "3")
        publish(world, 3, "3", {"2": trickle, "3": entry(world.base / "artifacts" / "v3")})
        await asyncio.to_thread(
            wait_until, lambda: sidecar.status()["current"]["version"] == "3", 30
        )
        events = [(h["event"], h.get("version"), h.get("by")) for h in sidecar.status()["history"]]
        assert ("preempted", "2", "3") in events
        assert Pointer.read(world.root / "pointer.json").version == "3"
    finally:
        await asyncio.to_thread(sidecar.stop, signal.SIGTERM)


@pytest.mark.slow
async def test_a_stalled_download_is_an_error_and_held_off(
    world: World, cli_env: dict[str, str], origin: Origin
) -> None:
    """Only the trickle: after one window it is a Stalled error in /status, not retried at once."""
    allow = ["--allow", origin.url("/"), "--allow", world.base.as_uri()]
    sidecar = await asyncio.to_thread(start, cli_env, world, *allow)
    try:
        publish(world, 2, "2", {"2": {"uri": origin.url("/trickle")}})
        failed = await asyncio.to_thread(wait_until, lambda: sidecar.find("flip-failed"), 40)
        assert "Stalled" in failed["error"] and failed["version"] == "2"
        doc = sidecar.status()
        assert "Stalled" in doc["registry"]["last_error"]
        assert doc["current"]["version"] == "1" and doc["in_flight"] is None
        held = doc["held_off"][0]
        assert (held["version"], held["failures"]) == ("2", 1) and held["retry_in_s"] > 0
        await asyncio.sleep(4)  # four polls name v2 again
        assert len(origin.seen("/trickle")) == 1
        table = await asyncio.to_thread(
            subprocess.run,
            cli("status", "--url", sidecar.url),
            env=cli_env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        rows = dict(line.split(None, 1) for line in table.stdout.splitlines() if " " in line)
        assert rows["held-off"].startswith("2 (1x, retry in")
    finally:
        await asyncio.to_thread(sidecar.stop, signal.SIGTERM)


@pytest.mark.slow
def test_a_version_that_never_verifies_is_held_off(world: World, cli_env: dict[str, str]) -> None:
    """A digest that never matches is downloaded once per hold-off, not on every poll."""
    sidecar = start(cli_env, world, "--poll-interval", "0.5")
    try:
        make_artifact(world.base, "2")
        bad = {**entry(world.base / "artifacts" / "v2"), "digest": "sha256:" + "0" * 64}
        publish(world, 2, "2", {"2": bad})
        wait_until(lambda: sidecar.find("flip-failed"), 30)
        time.sleep(6)  # about a dozen polls
        failures = [e for e in sidecar.events() if e.get("event") == "flip-failed"]
        assert len(failures) == 1 and "IntegrityError" in failures[0]["error"]
        code, body = sidecar.get("/refresh?wait=20", method="POST", timeout=30)
        assert (code, json.loads(body)["outcome"]) == (200, "failed")  # forced: tried again
        assert sidecar.status()["held_off"][0]["failures"] == 2
        assert sidecar.status()["current"]["version"] == "1"
    finally:
        sidecar.stop(signal.SIGTERM)


def test_a_fifo_as_the_node_lkg_does_not_block_status(
    world: World, cli_env: dict[str, str]
) -> None:
    """A FIFO planted as the node LKG: /status shows it as an error; the next flip replaces it."""
    sidecar = start(cli_env, world)
    try:
        lkg = world.lkg / ENTRY
        lkg.unlink()
        os.mkfifo(lkg)
        doc = wait_until(lambda: (d := sidecar.status()) and d["lkg"]["node"].get("error") and d)
        assert "a FIFO" in doc["lkg"]["node"]["error"]
        for path in ("/healthz", "/readyz", "/status"):
            assert answers_within(sidecar, path, 1.0) == 200
        make_artifact(world.base, "2")
        publish(world, 2, "2", {"2": entry(world.base / "artifacts" / "v2")})
        wait_until(lambda: sidecar.status()["current"]["version"] == "2", 30)
        assert Pointer.read(lkg).version == "2"
    finally:
        sidecar.stop(signal.SIGTERM)


@pytest.fixture
def small_lkg(tmp_path: Path) -> Iterator[Path]:
    """A node directory on a 1 MiB tmpfs."""
    mnt = tmp_path / "node"
    why = mount_tmpfs(mnt, 1 << 20)
    if why:
        pytest.skip(f"{why}; the injected disk-full tests in tests/volume run instead")
    yield mnt
    unmount(mnt)


def test_a_full_node_disk_after_a_flip_is_reported_not_crashed(
    world: World, cli_env: dict[str, str], small_lkg: Path
) -> None:
    """The node disk fills up: the flip to v2 lands, /status says v2 and why the LKG is v1."""
    sidecar = start(cli_env, world, lkg=small_lkg)
    try:
        fill(small_lkg)
        make_artifact(world.base, "2")
        publish(world, 2, "2", {"2": entry(world.base / "artifacts" / "v2")})
        doc = wait_until(lambda: (d := sidecar.status())["current"]["version"] == "2" and d, 30)
        assert "ENOSPC" in doc["lkg"]["write_error"]
        assert doc["lkg"]["node"]["version"] == "1"
        time.sleep(2)  # two more polls: each confirms v2, none crashes
        assert sidecar.find("refresh-crashed") is None
        assert sidecar.status()["current"]["version"] == "2"
    finally:
        sidecar.stop(signal.SIGTERM)
