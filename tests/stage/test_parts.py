"""The parallel-parts machinery: ordered hashing and failure handling of job runs."""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
from typing import TYPE_CHECKING

import pytest

from pointercache.errors import ArtifactNotFound
from pointercache.stage.fetchers.parts import OrderedHasher, Transfer, run_jobs, split

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path


def test_ordered_hasher_matches_sha256_whatever_the_completion_order(tmp_path: Path) -> None:
    """Parts completed in reverse order still give the sha256 of the whole file."""
    data = os.urandom(5 * (1 << 20) + 7)
    path = tmp_path / "f"
    path.write_bytes(data)
    ranges = split(len(data), 1 << 20)
    hasher = OrderedHasher(path, ranges)
    for index in reversed(range(len(ranges))):
        hasher.completed(index)
    assert hasher.hexdigest() == hashlib.sha256(data).hexdigest()


def test_ordered_hasher_from_many_threads(tmp_path: Path) -> None:
    """Parts completed concurrently from a thread pool are each hashed once, in order."""
    data = os.urandom(64 * 4096 + 3)
    path = tmp_path / "f"
    path.write_bytes(data)
    ranges = split(len(data), 4096)
    hasher = OrderedHasher(path, ranges)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(hasher.completed, reversed(range(len(ranges)))))
    assert hasher.hexdigest() == hashlib.sha256(data).hexdigest()


async def test_run_jobs_raises_the_first_real_error_and_stops_the_rest() -> None:
    """One failing job aborts the others; the caller sees the failure, not an abort."""
    transfer = Transfer(0, None)
    ran: list[int] = []

    def ok(i: int) -> Callable[[], None]:
        return lambda: ran.append(i)

    def bad() -> None:
        raise ArtifactNotFound("gone")

    jobs = [bad, *(ok(i) for i in range(20))]
    with concurrent.futures.ThreadPoolExecutor(1) as pool, pytest.raises(ArtifactNotFound):
        await run_jobs(pool, jobs, transfer)
    assert transfer.abort.is_set()
    assert ran == []  # queued behind the failure on a single thread: never started
