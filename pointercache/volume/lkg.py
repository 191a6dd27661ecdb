"""The node's last-known-good pointers and its content-addressed artifact cache.

Layout of ``--lkg-dir`` (a hostPath or PVC that outlives pods)::

    <model>.json                  node LKG pointer per model (atomic, revision never lowered)
    cas/sha256/<hex>/model        a verified artifact (file or directory), by digest
    cas/sha256/<hex>/.size        its total bytes
    cas/sha256/<hex>/.last-used   its mtime is the LRU clock (touched on every hit and put)
    cas/.tmp/                     entries being written; renamed into place when complete
    .locks/                       flock files: one per model pointer, one per digest

A cache entry appears by one rename of a complete directory, so no reader sees a partial entry.
``cache_lock(digest)`` is a cross-process ``flock``: pods on a node that need the same digest
download it once while the others wait, then copy from the cache. Eviction keeps the cache within
``cache_max_bytes`` by least-recent use, never removes an entry a node LKG pointer references, and
skips entries locked by another process. ``verify`` re-hashes an entry and deletes it if damaged.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import secrets
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

from pointercache.base.log import log
from pointercache.errors import InvalidPointer, StoreLocked
from pointercache.model.pointer import Pointer, check_digest, check_name
from pointercache.volume.fsutil import atomic_write_bytes, copy_tree_or_link, fsync_dir

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Collection, Iterator

LOCK_POLL = 0.05
"""Seconds between attempts to take a busy lock (cancellable waits, no stuck threads)."""
TMP_MAX_AGE = 3600.0
"""``recover`` removes temp entries older than this many seconds (a writer crashed)."""


class NodeLKG:
    """Node-local LKG pointers plus the content-addressed artifact cache."""

    def __init__(self, dir: Path, *, cache_max_bytes: int = 0) -> None:  # noqa: A002
        self.dir = Path(dir)
        self.cache_max_bytes = cache_max_bytes
        self.cas = self.dir / "cas" / "sha256"
        self.tmp = self.dir / "cas" / ".tmp"
        self.locks = self.dir / ".locks"

    # -- pointers -----------------------------------------------------------------------------

    def pointer_path(self, model: str) -> Path:
        """Where the node LKG pointer of ``model`` lives."""
        return self.dir / f"{check_name('model', model)}.json"

    def read(self, model: str) -> Pointer | None:
        """The node LKG pointer of ``model``: None if absent, ``InvalidPointer`` if damaged."""
        try:
            pointer = Pointer.read(self.pointer_path(model))
        except FileNotFoundError:
            return None
        if pointer.model != model:
            raise InvalidPointer(f"{self.pointer_path(model)}: model is {pointer.model!r}")
        return pointer

    def write(self, pointer: Pointer) -> bool:
        """Store ``pointer`` atomically unless it would lower the revision; return if written.

        A lower revision is accepted only for the same digest (a provenance refresh).
        """
        self.dir.mkdir(parents=True, exist_ok=True)
        with self._flock(f"model-{pointer.model}", timeout=None):
            try:
                old = self.read(pointer.model)
            except InvalidPointer as exc:
                log.warning("lkg-damaged", model=pointer.model, error=exc)
                old = None
            if old is not None and old.revision > pointer.revision and old.digest != pointer.digest:
                log.info(
                    "lkg-kept", model=pointer.model, kept=old.revision, offered=pointer.revision
                )
                return False
            atomic_write_bytes(self.pointer_path(pointer.model), pointer.to_json())
        return True

    def referenced_digests(self) -> set[str]:
        """Digests named by any node LKG pointer in this directory (damaged ones are skipped)."""
        found: set[str] = set()
        for path in self.dir.glob("*.json"):
            try:
                found.add(Pointer.read(path).digest)
            except (OSError, InvalidPointer):
                continue
        return found

    # -- cache --------------------------------------------------------------------------------

    def _entry(self, digest: str) -> Path:
        return self.cas / check_digest("digest", digest).removeprefix("sha256:")

    def cache_lookup(self, digest: str) -> Path | None:
        """Return the cached artifact for ``digest`` (and mark it used), or None."""
        entry = self._entry(digest)
        try:
            _touch(entry / ".last-used")
        except FileNotFoundError:
            return None
        artifact = entry / "model"
        return artifact if os.path.lexists(artifact) else None

    def cache_put(self, artifact: Path, digest: str) -> Path:
        """Add a verified ``artifact`` under ``digest`` (copy or hardlink); return the entry's copy.

        The entry is assembled in ``cas/.tmp`` and renamed into place; if another process put the
        same digest first, its entry is kept. Then evicts others when the cache is bounded.
        """
        entry = self._entry(digest)
        if (found := self.cache_lookup(digest)) is not None:
            return found
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.cas.mkdir(parents=True, exist_ok=True)
        work = self.tmp / secrets.token_hex(8)
        work.mkdir()
        try:
            copy_tree_or_link(artifact, work / "model")
            (work / ".size").write_text(str(_size(work / "model")))
            _touch(work / ".last-used")
            fsync_dir(work)
            try:
                work.rename(entry)
            except OSError as exc:
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
            else:
                fsync_dir(self.cas)
                log.info("cache-put", digest=digest)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        if self.cache_max_bytes > 0:
            self.evict(protect={digest})
        return entry / "model"

    def cache_discard(self, digest: str) -> bool:
        """Delete the entry of ``digest`` (a damaged one); return whether one was removed."""
        entry = self._entry(digest)
        self.tmp.mkdir(parents=True, exist_ok=True)
        trash = self.tmp / f"trash-{secrets.token_hex(8)}"
        try:
            entry.rename(trash)
        except FileNotFoundError:
            return False
        shutil.rmtree(trash, ignore_errors=True)
        fsync_dir(self.cas)
        return True

    def verify(self, digest: str) -> bool:
        """Re-hash the entry of ``digest``; delete it and return False if it does not match."""
        from pointercache.model.digest import tree_digest

        artifact = self._entry(digest) / "model"
        if not os.path.lexists(artifact):
            return False
        try:
            actual, _size_bytes = tree_digest(artifact)
        except Exception as exc:
            log.warning("cache-damaged", digest=digest, error=exc)
            actual = ""
        if actual != digest:
            log.warning("cache-discarded", digest=digest, actual=actual)
            self.cache_discard(digest)
            return False
        return True

    def cache_entries(self) -> list[tuple[str, int, float]]:
        """``(digest, size_bytes, last_used)`` of every complete entry, least recent first."""
        found = []
        for entry in self.cas.glob("*") if self.cas.is_dir() else ():
            try:
                used = (entry / ".last-used").stat().st_mtime
                size = int((entry / ".size").read_text())
            except (OSError, ValueError):
                continue
            found.append((f"sha256:{entry.name}", size, used))
        return sorted(found, key=lambda item: item[2])

    def evict(self, protect: Collection[str] = ()) -> list[str]:
        """Drop least-recently-used entries until within ``cache_max_bytes``; return their digests.

        Never drops a digest a node LKG references, one in ``protect``, or one locked elsewhere.
        """
        if self.cache_max_bytes <= 0:
            return []
        entries = self.cache_entries()
        total = sum(size for _, size, _ in entries)
        keep = self.referenced_digests() | set(protect)
        evicted: list[str] = []
        for digest, size, _used in entries:
            if total <= self.cache_max_bytes:
                break
            if digest in keep:
                continue
            try:
                with self.cache_lock(digest, timeout=0):
                    self.cache_discard(digest)
            except StoreLocked:
                continue
            total -= size
            evicted.append(digest)
        if evicted:
            log.info("cache-evicted", digests=evicted, remaining_bytes=total)
        return evicted

    def recover(self, max_age: float = TMP_MAX_AGE) -> list[Path]:
        """Remove temp entries left by crashed writers (older than ``max_age`` seconds)."""
        removed = []
        for path in self.tmp.glob("*") if self.tmp.is_dir() else ():
            with contextlib.suppress(OSError):
                if time.time() - path.lstat().st_mtime > max_age:
                    shutil.rmtree(path, ignore_errors=True)
                    removed.append(path)
        return removed

    # -- locks --------------------------------------------------------------------------------

    def cache_lock(
        self, digest: str, *, timeout: float | None = None
    ) -> contextlib.AbstractContextManager[None]:
        """Cross-process exclusive lock on ``digest``; ``StoreLocked`` after ``timeout`` seconds."""
        return self._flock(f"sha256-{self._entry(digest).name}", timeout=timeout)

    @contextlib.asynccontextmanager
    async def acache_lock(
        self, digest: str, *, max_wait: float | None = None
    ) -> AsyncIterator[None]:
        """``cache_lock`` for coroutines: waits with ``asyncio.sleep`` so it can be cancelled."""
        fd = self._open_lock(f"sha256-{self._entry(digest).name}")
        try:
            deadline = None if max_wait is None else time.monotonic() + max_wait
            while not _try_lock(fd):
                if deadline is not None and time.monotonic() >= deadline:
                    raise StoreLocked(f"cache entry {digest} is locked by another process")
                await asyncio.sleep(LOCK_POLL)
            yield
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def _flock(self, name: str, *, timeout: float | None) -> Iterator[None]:
        fd = self._open_lock(name)
        try:
            deadline = None if timeout is None else time.monotonic() + timeout
            while not _try_lock(fd):
                if deadline is not None and time.monotonic() >= deadline:
                    raise StoreLocked(f"{name} is locked by another process")
                time.sleep(LOCK_POLL)
            yield
        finally:
            os.close(fd)

    def _open_lock(self, name: str) -> int:
        self.locks.mkdir(parents=True, exist_ok=True)
        return os.open(self.locks / f"{name}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _touch(path: Path) -> None:
    """Set ``path``'s mtime to now, creating it only if its directory exists."""
    now = time.time_ns()
    try:
        os.utime(path, ns=(now, now))
    except FileNotFoundError:
        if not path.parent.is_dir():
            raise
        path.touch()
        os.utime(path, ns=(now, now))


def _size(path: Path) -> int:
    if not path.is_dir():
        return path.stat().st_size
    return sum(
        Path(root, name).lstat().st_size for root, _dirs, files in os.walk(path) for name in files
    )
