"""Crash safety: a writer SIGKILLed at random moments never exposes a torn or missing version."""

from __future__ import annotations

import json
import os
import random
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pointercache.model.digest import tree_digest
from pointercache.model.pointer import Pointer
from pointercache.volume.fsutil import TMP_PREFIX
from pointercache.volume.store import Store

REPO = Path(__file__).resolve().parents[2]
KILL_TARGET = 300
TIME_BUDGET = 30.0
"""Seconds of kill cycles; the loop stops at KILL_TARGET kills or here, whichever is first."""
MIN_KILLS = 50
"""Below this the run did not exercise enough crash points to mean anything."""


def _spawn(
    args: list[str], *, stderr: Path, stdout: int = subprocess.PIPE, stdin: int | None = None
) -> subprocess.Popen[bytes]:
    with stderr.open("ab") as err:
        return subprocess.Popen(
            [sys.executable, "-m", *args],
            cwd=REPO,
            stdin=stdin,
            stdout=stdout,
            stderr=err,
            bufsize=0,
        )


def _read_line(proc: subprocess.Popen[bytes], logs: Path) -> list[str]:
    """Read one line from the fork server (unbuffered, so select() sees what is pending)."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 30.0)
    line = proc.stdout.readline() if ready else b""
    if not line.endswith(b"\n"):
        pytest.fail(f"fork server stopped answering: {line!r} {logs.read_text()[-2000:]}")
    return line.decode().split()


def _assert_current_complete(root: Path) -> None:
    """The state a crash left: ``current`` resolves to a complete version whose digest matches."""
    store = Store(root)
    version_dir = store.current_dir()
    assert version_dir is not None
    pointer = store.current()
    assert pointer is not None
    assert tree_digest(version_dir / "model") == (pointer.digest, pointer.size_bytes)


def _leftovers(root: Path) -> list[str]:
    found = [str(p) for p in (root / ".staging").iterdir()]
    for dirpath, dirs, files in os.walk(root):
        found += [f"{dirpath}/{n}" for n in dirs + files if n.startswith(TMP_PREFIX)]
    return found


def _kill_cycles(root: Path, progress: Path, logs: Path) -> tuple[int, int]:
    """Start, randomly SIGKILL and check a writer until the budget is spent."""
    server = _spawn(
        ["tests.volume.driver", str(root), "--fork-server", "--stats", str(progress)],
        stderr=logs,
        stdin=subprocess.PIPE,
    )
    assert server.stdin is not None
    rng = random.Random(20261122)
    kills = cleaned = 0
    alive = 0.0
    start = time.monotonic()
    try:
        while kills < KILL_TARGET and time.monotonic() - start < TIME_BUDGET:
            server.stdin.write(f"spawn {kills}\n".encode())
            word, pid = _read_line(server, logs)
            assert word == "ready"
            ready_at = time.monotonic()
            time.sleep(rng.uniform(0.0, _kill_window(alive, progress)))
            alive += time.monotonic() - ready_at
            os.kill(int(pid), signal.SIGKILL)
            assert _read_line(server, logs) == ["exit", pid, str(-signal.SIGKILL)]
            kills += 1
            cleaned += _check_after_crash(root)
    finally:
        server.stdin.close()
        server.wait(timeout=30)
        assert server.stdout is not None
        server.stdout.close()
    return kills, cleaned


def _kill_window(alive: float, progress: Path) -> float:
    """Longest delay before a kill: about three iterations of the writer on this machine.

    Measured from the run so far (seconds alive per finished iteration), so kills land inside
    every phase of an iteration whether the disk is fast or a busy CI box makes fsync slow.
    """
    done = len(progress.read_bytes().splitlines()) if progress.exists() else 0
    per_iteration = alive / done if done else 0.05
    return min(0.5, max(0.02, 3 * per_iteration))


def _check_after_crash(root: Path) -> bool:
    """Check what the crash left, recover, check again; return whether recover removed anything."""
    if os.path.lexists(root / "current"):
        _assert_current_complete(root)
    for version_dir in sorted((root / "versions").glob("*/*")):
        pointer = Pointer.read(version_dir / "pointer.json")  # every installed version is whole
        assert version_dir.name == pointer.short
        assert tree_digest(version_dir / "model") == (pointer.digest, pointer.size_bytes)
    store = Store(root)
    with store.lock(timeout=10):
        removed = store.recover()
    assert _leftovers(root) == []
    if os.path.lexists(root / "current"):
        assert (root / "model").readlink() == Path("current/model")
        assert (root / "pointer.json").readlink() == Path("current/pointer.json")
    return bool(removed)


@pytest.fixture
def volume(tmp_path: Path) -> Iterator[Path]:
    """Where the store lives: /dev/shm when available, else tmp_path.

    A SIGKILL leaves the page cache intact, so what the crash loop checks (renames, links,
    recovery) does not depend on fsync; on tmpfs an iteration takes milliseconds however busy
    the machine's disk is, so the kills spread over every phase of many iterations.
    """
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        path = Path(tempfile.mkdtemp(prefix="pointercache-crash-", dir=shm))
        yield path
        shutil.rmtree(path, ignore_errors=True)
    else:
        yield tmp_path / "volume"


@pytest.mark.slow
def test_sigkill_never_exposes_a_torn_version(
    tmp_path: Path, volume: Path, record_property: Callable[[str, object], None]
) -> None:
    """A reader process never sees a partial, missing or mismatched version as writers die."""
    root = volume / "root"
    violations = tmp_path / "violations.log"
    stats = tmp_path / "checker.json"
    stop = tmp_path / "stop"
    progress = tmp_path / "progress"
    logs = tmp_path / "processes.log"
    violations.touch()
    checker = _spawn(
        ["tests.volume.checker", str(root), str(violations), str(stats), str(stop)],
        stderr=logs,
        stdout=subprocess.DEVNULL,
    )
    started = time.monotonic()
    try:
        kills, cleaned = _kill_cycles(root, progress, logs)
    finally:
        stop.touch()
        try:
            checker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            checker.kill()
            checker.wait()
    elapsed = time.monotonic() - started
    publishes = len(progress.read_text().splitlines()) if progress.exists() else 0
    seen = json.loads(stats.read_text())
    summary = {
        "kills": kills,
        "publishes": publishes,
        "recoveries_with_leftovers": cleaned,
        "seconds": round(elapsed, 1),
        **{f"reader_{k}": v for k, v in seen.items()},
    }
    for key, value in summary.items():
        record_property(key, value)
    print(f"crash-loop: {summary}")
    assert violations.read_text() == ""
    assert checker.returncode == 0, logs.read_text()[-2000:]
    assert kills >= MIN_KILLS
    assert publishes >= MIN_KILLS
    assert cleaned >= 10, "no kill landed while something was staged"
    assert seen["checks"] >= 100
    assert seen["versions"] >= 10


def _versions(root: Path) -> set[str]:
    return {p.name for p in (root / "versions").glob("*/*")}


def test_a_writer_killed_inside_the_tree_sync_has_published_nothing_of_it(
    tmp_path: Path, volume: Path
) -> None:
    """A writer SIGKILLed while its artifact is being made durable never named that version."""
    root, marker, logs = volume / "root", tmp_path / "marker", tmp_path / "writers.log"
    driver = ["tests.volume.driver", str(root)]
    quiet = subprocess.DEVNULL
    first = _spawn([*driver, "--seed", "1", "--iterations", "6"], stderr=logs, stdout=quiet)
    assert first.wait(timeout=60) == 0, logs.read_text()[-2000:]
    kinds = []
    for seed in range(2, 8):
        before = _versions(root)
        writer = _spawn(
            [*driver, "--seed", str(seed), "--die-at-sync", str(marker)], stderr=logs, stdout=quiet
        )
        assert writer.wait(timeout=60) == -signal.SIGKILL, logs.read_text()[-2000:]
        kind, artifact = marker.read_text().split(maxsplit=1)
        kinds.append(kind)
        assert Path(artifact.strip()).is_relative_to(root / ".staging")
        assert _versions(root) <= before  # nothing new reached versions/ before its sync returned
        current = os.readlink(root / "current") if os.path.lexists(root / "current") else None
        assert current is None or Path(current).name in before
        _check_after_crash(root)
    assert "dir" in kinds, "no kill landed inside the sync of a directory artifact"
