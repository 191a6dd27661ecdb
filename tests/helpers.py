"""The one helpers module of the tests: waiting, ports, the CLI, pointers, artifacts, manifests.

Topic folders keep only what is theirs (a fake origin, a crash driver); everything two topics
need lives here. Artifacts and manifests come from ``pointercache_cli.artifacts``, the same
factory ``pointercache demo`` uses.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import time
from collections.abc import Callable
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
