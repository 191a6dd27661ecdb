"""Cross-process locks of the node directory: ``flock`` on files under ``.locks/``.

A lock is held by an open file description, so a process that dies (even by SIGKILL) releases
it. Waiting never blocks in the kernel: a busy lock is retried every ``POLL`` seconds, so a
blocking wait stays bounded by its ``timeout`` and an asyncio wait can be cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from pointercache.errors import StoreLocked

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

POLL = 0.05
"""Seconds between attempts to take a busy lock."""


class NodeLocks:
    """Named exclusive locks in ``<dir>``."""

    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)

    @contextlib.contextmanager
    def hold(self, name: str, *, timeout: float | None) -> Iterator[None]:
        """Hold lock ``name``; ``StoreLocked`` if another holder keeps it ``timeout`` seconds."""
        fd = self._open(name)
        try:
            deadline = None if timeout is None else time.monotonic() + timeout
            while not _try_lock(fd):
                if deadline is not None and time.monotonic() >= deadline:
                    raise StoreLocked(f"{name} is locked by another process")
                time.sleep(POLL)
            yield
        finally:
            os.close(fd)

    @contextlib.asynccontextmanager
    async def ahold(self, name: str, *, max_wait: float | None) -> AsyncIterator[None]:
        """``hold`` for coroutines: waits with ``asyncio.sleep``, so it can be cancelled."""
        fd = self._open(name)
        try:
            deadline = None if max_wait is None else time.monotonic() + max_wait
            while not _try_lock(fd):
                if deadline is not None and time.monotonic() >= deadline:
                    raise StoreLocked(f"{name} is locked by another process")
                await asyncio.sleep(POLL)
            yield
        finally:
            os.close(fd)

    def _open(self, name: str) -> int:
        self.dir.mkdir(parents=True, exist_ok=True)
        return os.open(self.dir / f"{name}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True
