"""The node's content-addressed artifact cache: ``<lkg-dir>/cas/sha256/<hex>/``.

::

    cas/sha256/<hex>/model        a verified artifact (file or directory), by digest
    cas/sha256/<hex>/.size        its total bytes
    cas/sha256/<hex>/.last-used   its mtime is the LRU clock (touched on every hit and put)
    cas/.tmp/                     entries being written; renamed into place when complete

A cache entry appears by one rename of a complete directory, so no reader sees a partial entry.
``alock(digest)`` is a cross-process ``flock``: pods on a node that need the same digest download
it once while the others wait, then copy from the cache. Eviction keeps the cache within
``max_bytes`` by least-recent use, never removes an entry the node LKG pointers reference
(``protected``), and skips entries locked by another process. ``verify`` re-hashes an entry and
deletes it if damaged.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from pointercache.base.log import log
from pointercache.errors import StoreError, StoreLocked
from pointercache.model.pointer import check_digest
from pointercache.volume import layout
from pointercache.volume.fsutil import copy_tree_or_link, fsync_dir
from pointercache.volume.locks import NodeLocks
from pointercache.volume.nodefile import read_node_file

if TYPE_CHECKING:
    from collections.abc import Collection

TMP_MAX_AGE = 3600.0
"""``recover`` removes temp entries older than this many seconds (a writer crashed)."""


class NodeCache:
    """The content-addressed artifact cache of one node directory."""

    def __init__(
        self,
        directory: Path,
        *,
        max_bytes: int = 0,
        protected: Callable[[], set[str]] = set,
    ) -> None:
        self.dir = Path(directory)
        self.max_bytes = max_bytes
        """Bound of the cache in bytes (0: unbounded)."""
        self.protected = protected
        """Digests eviction must keep (those the node LKG pointers name)."""
        self.cas = self.dir / layout.CAS
        self.tmp = self.dir / layout.CAS_TMP
        self.locks = NodeLocks(self.dir / layout.NODE_LOCKS)

    def _entry(self, digest: str) -> Path:
        return self.cas / check_digest("digest", digest).removeprefix("sha256:")

    def lookup(self, digest: str) -> Path | None:
        """Return the cached artifact for ``digest`` (and mark it used), or None."""
        entry = self._entry(digest)
        try:
            _touch(entry / layout.CAS_USED)
        except FileNotFoundError:
            return None
        artifact = entry / layout.MODEL
        return artifact if os.path.lexists(artifact) else None

    def put(self, artifact: Path, digest: str) -> Path:
        """Add a verified ``artifact`` under ``digest`` (copy or hardlink); return the entry's copy.

        The entry is assembled in ``cas/.tmp`` and renamed into place; if another process put the
        same digest first, its entry is kept. Then evicts others when the cache is bounded.
        """
        entry = self._entry(digest)
        if (found := self.lookup(digest)) is not None:
            return found
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.cas.mkdir(parents=True, exist_ok=True)
        work = self.tmp / secrets.token_hex(8)
        work.mkdir()
        try:
            copy_tree_or_link(artifact, work / layout.MODEL)
            (work / layout.CAS_SIZE).write_text(str(_size(work / layout.MODEL)))
            _touch(work / layout.CAS_USED)
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
        if self.max_bytes > 0:
            self.evict(protect={digest})
        return entry / layout.MODEL

    def discard(self, digest: str) -> bool:
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

        artifact = self._entry(digest) / layout.MODEL
        if not os.path.lexists(artifact):
            return False
        try:
            actual, _size_bytes = tree_digest(artifact)
        except Exception as exc:
            log.warning("cache-damaged", digest=digest, error=exc)
            actual = ""
        if actual != digest:
            log.warning("cache-discarded", digest=digest, actual=actual)
            self.discard(digest)
            return False
        return True

    def entries(self) -> list[tuple[str, int, float]]:
        """``(digest, size_bytes, last_used)`` of every complete entry, least recent first."""
        found = []
        for entry in self.cas.glob("*") if self.cas.is_dir() else ():
            try:
                used = (entry / layout.CAS_USED).lstat().st_mtime
                size = int(read_node_file(entry / layout.CAS_SIZE, max_bytes=32))
            except (OSError, StoreError, ValueError):
                continue  # damaged, or planted: a FIFO or a link where the size should be
            found.append((f"sha256:{entry.name}", size, used))
        return sorted(found, key=lambda item: item[2])

    def evict(self, protect: Collection[str] = ()) -> list[str]:
        """Drop least-recently-used entries until within ``max_bytes``; return their digests.

        Never drops a ``protected()`` digest, one in ``protect``, or one locked elsewhere.
        """
        if self.max_bytes <= 0:
            return []
        entries = self.entries()
        total = sum(size for _, size, _ in entries)
        keep = self.protected() | set(protect)
        evicted: list[str] = []
        for digest, size, _used in entries:
            if total <= self.max_bytes:
                break
            if digest in keep:
                continue
            try:
                with self.lock(digest, timeout=0):
                    self.discard(digest)
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

    def lock(
        self, digest: str, *, timeout: float | None = None
    ) -> contextlib.AbstractContextManager[None]:
        """Cross-process exclusive lock on ``digest``; ``StoreLocked`` after ``timeout`` seconds."""
        return self.locks.hold(self._lock_name(digest), timeout=timeout)

    def alock(
        self, digest: str, *, max_wait: float | None = None
    ) -> contextlib.AbstractAsyncContextManager[None]:
        """``lock`` for coroutines: waits with ``asyncio.sleep`` so it can be cancelled."""
        return self.locks.ahold(self._lock_name(digest), max_wait=max_wait)

    def _lock_name(self, digest: str) -> str:
        return f"sha256-{self._entry(digest).name}"


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
