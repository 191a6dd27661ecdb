"""The one helpers module of the tests: waiting, ports, the CLI, pointers, artifacts, manifests.

Topic folders keep only what is theirs (a fake origin, a crash driver); everything two topics
need lives here. Artifacts and manifests come from ``pointercache_cli.artifacts``, the same
factory ``pointercache demo`` uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pointercache.base.clock import utcnow
from pointercache.model.pointer import Pointer
from pointercache_cli import artifacts

MODEL = "recommender"
"""The model most tests serve."""

make_artifact = artifacts.make_artifact
local_manifest = artifacts.local_manifest


def write_manifest(path: Path, base: Path, *, model: str = MODEL, **kw: Any) -> dict[str, Any]:
    """``pointercache_cli.artifacts.write_manifest`` for ``MODEL`` unless told otherwise."""
    return artifacts.write_manifest(path, base, model=model, **kw)


def cli(*args: str) -> list[str]:
    """The argv of the ``pointercache`` command run from this interpreter."""
    return [sys.executable, "-m", "pointercache_cli", *args]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.02) -> Any:
    """Poll ``predicate`` until it returns a truthy value (returned); fail the test on timeout.

    A bound on waiting, not a timing assertion. OS, key, type and value errors count as "not yet".
    """
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except (OSError, KeyError, TypeError, ValueError) as exc:
            last = exc
            value = None
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last error: {last})")


async def await_until(
    predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02
) -> Any:
    """``wait_until`` for coroutines: sleeps with ``asyncio.sleep`` between checks."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


def make_pointer(**fields: Any) -> Pointer:
    """A valid schema-1 pointer; pass only the fields a test cares about."""
    values: dict[str, Any] = {
        "model": MODEL,
        "version": "1",
        "uri": "file:///models/recommender/1",
        "digest": "sha256:" + "0" * 64,
        "size_bytes": 10,
        "revision": 1,
        "signature": None,
        "source": "registry",
        "source_detail": "tests",
        "resolved_at": utcnow(),
        "registry_seen_at": None,
    }
    return Pointer(**(values | fields))


@contextlib.contextmanager
def held_flock(path: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding an exclusive ``flock`` on ``path`` until the block ends."""
    path.parent.mkdir(parents=True, exist_ok=True)
    code = (
        "import fcntl, os, sys, time\n"
        "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "print('held', flush=True)\n"
        "time.sleep(3600)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "held"
        yield proc
    finally:
        proc.kill()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


def mount_tmpfs(path: Path, size: int) -> str | None:
    """Mount a real tmpfs of ``size`` bytes at ``path``; the reason when this process cannot."""
    path.mkdir(parents=True, exist_ok=True)
    if shutil.which("mount") is None or os.geteuid() != 0:
        return "mounting a tmpfs needs root and mount(8)"
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    return None if done.returncode == 0 else f"cannot mount a tmpfs here ({done.stderr.strip()})"


def unmount(path: Path) -> None:
    """Lazily unmount what ``mount_tmpfs`` mounted."""
    subprocess.run(["umount", "-l", str(path)], check=False)


def fill(directory: Path) -> None:
    """Write into ``directory`` until its filesystem has no byte left (ENOSPC)."""
    fd = os.open(directory / "ballast", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        for size in (1 << 16, 1 << 12, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * size)
    finally:
        os.close(fd)
