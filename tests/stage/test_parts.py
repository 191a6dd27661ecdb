"""The parallel-parts machinery: ordered hashing and failure handling of job runs."""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import threading
import time
from functools import partial
from typing import TYPE_CHECKING

import pytest

from pointercache.errors import ArtifactNotFound
from pointercache.stage.fetchers.parts import OrderedHasher, Transfer, run_jobs, split

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
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
        await run_jobs(pool, jobs, transfer, workers=1)
    assert transfer.abort.is_set()
    assert ran == []  # queued behind the failure on a single thread: never started


async def test_run_jobs_keeps_the_work_in_flight_bounded_by_its_workers() -> None:
    """Jobs are drawn from a lazy iterator as workers free up: never more than ``workers`` are
    taken and unfinished at once, and every job runs once."""
    transfer = Transfer(0, None)
    lock = threading.Lock()
    taken = running = peak = 0
    done: list[int] = []

    def job(i: int) -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.001)
        with lock:
            running -= 1
            done.append(i)

    def lazy() -> Iterator[Callable[[], None]]:
        nonlocal taken
        for i in range(200):
            taken += 1
            assert taken - len(done) <= 3, "a job was taken before a worker was free for it"
            yield partial(job, i)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        await run_jobs(pool, lazy(), transfer, workers=3)
    assert sorted(done) == list(range(200))
    assert 1 <= peak <= 3
