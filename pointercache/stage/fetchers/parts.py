"""Parallel, bounded-memory downloads into files: the machinery under the S3 fetcher.

A transfer is a stream of blocking jobs (one per small object, one per byte range of a large
one) that a fixed number of worker threads of a pool take in turn, so the work in flight stays
bounded however many objects there are. Ranges are written in place with ``os.pwrite`` into a
preallocated file, so memory stays at one chunk buffer per thread; ``OrderedHasher`` computes
the sha256 of such a file in order while later parts are still arriving. The first failing job
sets the shared abort flag, the others stop at their next chunk, and ``run_jobs`` waits for
every thread before it raises, so no thread writes into a file after the fetcher has removed it
— for at most ``drain`` seconds: a thread stuck in a socket read that its read timeout has not
ended yet is abandoned (logged), so a cancelled fetch (a pre-empted download, the init
deadline) returns promptly.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import hashlib
import os
import threading
from typing import TYPE_CHECKING

from pointercache.errors import FetchError, FetchUnavailable

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from pathlib import Path

    from pointercache.stage.fetchers import Progress

CHUNK = 1 << 20
"""Bytes read from a body, written, and hashed at a time."""


class AbortedError(FetchError):
    """Another job failed, so this one stopped early; ``run_jobs`` raises the real error."""


class Transfer:
    """State shared by the threads of one fetch: byte counter, progress callback, abort flag."""

    def __init__(self, total: int, progress: Progress | None) -> None:
        self.total, self.done = total, 0
        self._progress = progress
        self._lock = threading.Lock()
        self.abort = threading.Event()

    def add(self, nbytes: int) -> None:
        """Count ``nbytes`` more (negative to take back a failed attempt) and report progress."""
        with self._lock:
            self.done += nbytes
            done = self.done
        if self._progress is not None:
            self._progress(done, self.total)

    def check(self) -> None:
        """Raise ``AbortedError`` once another job has failed."""
        if self.abort.is_set():
            raise AbortedError("aborted")


class OrderedHasher:
    """sha256 of a file written out of order: hashes each part once all earlier ones are done.

    The thread that completes a part hashes every contiguous finished part after the cursor,
    re-reading it from the file (the page cache, in practice); one thread hashes at a time.
    """

    def __init__(self, path: Path, ranges: list[tuple[int, int]]) -> None:
        self._path, self._ranges = path, ranges
        self._sha = hashlib.sha256()
        self._done: set[int] = set()
        self._cursor = 0
        self._state = threading.Lock()
        self._hashing = threading.Lock()

    def completed(self, index: int) -> None:
        """Mark part ``index`` written and hash what has become contiguous."""
        with self._state:
            self._done.add(index)
        while self._hashing.acquire(blocking=False):
            try:
                self._advance()
            finally:
                self._hashing.release()
            with self._state:
                if self._cursor not in self._done:
                    return

    def _ready(self) -> bool:
        with self._state:
            return self._cursor in self._done

    def _advance(self) -> None:
        if not self._ready():
            return
        fd = os.open(self._path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            while self._ready():
                start, end = self._ranges[self._cursor]
                for offset in range(start, end, CHUNK):
                    self._sha.update(os.pread(fd, min(CHUNK, end - offset), offset))
                self._cursor += 1
        finally:
            os.close(fd)

    def hexdigest(self) -> str:
        """The digest; every part must have completed."""
        assert self._cursor == len(self._ranges)
        return self._sha.hexdigest()


def split(size: int, part_size: int) -> list[tuple[int, int]]:
    """[start, end) byte ranges of ``part_size`` covering ``size`` bytes."""
    return [(lo, min(lo + part_size, size)) for lo in range(0, size, part_size)]


def preallocate(path: Path, size: int) -> None:
    """Create ``path`` with ``size`` bytes reserved (sparse where fallocate is unsupported)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError:
        os.ftruncate(fd, size)
    finally:
        os.close(fd)


LOCAL_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO, errno.EFBIG}
)
"""errno values that mean the staging disk, not the network, failed: never worth a retry."""


def local_io_error(exc: BaseException) -> FetchError | None:
    """A non-transient ``FetchError`` for a staging-disk failure, else None."""
    if isinstance(exc, OSError) and exc.errno in LOCAL_ERRNOS:
        return FetchError(f"cannot write the staging file: {errno.errorcode[exc.errno]}")
    return None


def expect_length(got: int, want: int, what: str) -> None:
    """``FetchUnavailable`` (a retryable short or long body) unless ``got == want``."""
    if got != want:
        raise FetchUnavailable(f"body of {what} ended at byte {got}, expected {want}")


async def run_jobs(
    pool: concurrent.futures.Executor,
    jobs: Iterable[Callable[[], None]],
    transfer: Transfer,
    workers: int,
    *,
    drain: float | None = None,
) -> None:
    """Run ``jobs`` on ``workers`` threads of ``pool``; on the first failure abort the rest,
    wait for them (at most ``drain`` seconds after the failure, None: no bound), raise it.

    Each worker takes the next job from the shared iterator when it is free, so the work in
    flight is bounded by ``workers`` whatever the number of jobs: ``jobs`` may be a lazy
    generator (it is advanced under a lock, one thread at a time), and the event loop sees one
    future per worker, not one per object.
    """
    source = iter(jobs)
    taking = threading.Lock()

    def worker() -> None:
        while True:
            transfer.check()
            with taking:
                job = next(source, None)
            if job is None:
                return
            try:
                job()
            except BaseException:
                transfer.abort.set()
                raise

    futures = [pool.submit(worker) for _ in range(max(1, workers))]
    error: BaseException | None = None
    try:
        await asyncio.gather(*(asyncio.wrap_future(f) for f in futures))
    except BaseException as exc:  # cancellation too: threads must stop before we return
        error = exc
        transfer.abort.set()
    _done, stuck = await asyncio.to_thread(concurrent.futures.wait, futures, drain)
    if stuck:
        from pointercache.base.log import log

        log.warning("fetch-threads-abandoned", threads=len(stuck), waited_s=drain)
    if error is not None:
        if isinstance(error, AbortedError):
            found = [f.exception() for f in futures if not f.cancelled()]
            error = next((e for e in found if e and not isinstance(e, AbortedError)), error)
        raise error
