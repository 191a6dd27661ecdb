"""Last-known-good pointers on disk: the node's (``<lkg-dir>/<model>.json``) and the cluster's
as the kubelet mounts it (an ``optional`` ConfigMap volume, ``<dir>/<model>.json``).

A node LKG pointer is written atomically under a per-model ``flock`` and its revision is never
lowered (``model.revision.may_replace``). The content-addressed cache beside it is
``pointercache.volume.cas``.

Both directories are read through ``volume.nodefile`` (non-blocking, regular files only, bounded):
a FIFO, a link to ``/dev/zero`` or a huge file where a pointer should be is refused with
``UnsafeNodeFile`` at once, and the caller skips that step. The node pointer is never followed
through a symlink; the mounted ConfigMap's ``..data`` links are. Waiting for the per-model lock is
bounded by ``LOCK_WAIT``: another process that holds it makes ``write`` raise ``StoreLocked``.
"""

from __future__ import annotations

from pathlib import Path

from pointercache.base.log import log
from pointercache.errors import InvalidPointer, StoreError
from pointercache.model.pointer import MAX_POINTER_BYTES, Pointer, check_name
from pointercache.volume import layout
from pointercache.volume.fsutil import atomic_write_bytes
from pointercache.volume.locks import NodeLocks
from pointercache.volume.nodefile import read_node_file, scan

LOCK_WAIT = 5.0
"""Seconds ``NodeLKG.write`` waits for the per-model lock before giving up (``StoreLocked``)."""


class NodeLKG:
    """Node-local LKG pointers in ``directory`` (a hostPath or PVC that outlives pods)."""

    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)
        self.locks = NodeLocks(self.dir / layout.NODE_LOCKS)

    def pointer_path(self, model: str) -> Path:
        """Where the node LKG pointer of ``model`` lives."""
        return self.dir / f"{check_name('model', model)}.json"

    def read(self, model: str) -> Pointer | None:
        """The node LKG pointer of ``model``: None if absent.

        ``InvalidPointer`` if it does not validate or names another model; ``UnsafeNodeFile`` if
        it is a link, FIFO, device, directory or over 1 MiB; ``OSError`` if unreadable.
        """
        return _read(self.pointer_path(model), model, follow=False)

    def write(self, pointer: Pointer, *, lock_wait: float = LOCK_WAIT) -> bool:
        """Store ``pointer`` atomically unless it would lower the revision; return if written.

        A lower revision is accepted only for the same digest (a provenance refresh). A damaged
        or unsafe file in its place is replaced. ``StoreLocked`` if another process holds the
        model's lock for ``lock_wait`` seconds; ``OSError`` (``ENOSPC``...) if it cannot be
        written.
        """
        from pointercache.model.revision import may_replace

        self.dir.mkdir(parents=True, exist_ok=True)
        with self.locks.hold(f"model-{pointer.model}", timeout=lock_wait):
            try:
                old = self.read(pointer.model)
            except (StoreError, OSError) as exc:
                log.warning("lkg-damaged", model=pointer.model, error=exc)
                old = None
            if old is not None and not may_replace(old, pointer, same_digest_refresh=True):
                log.info(
                    "lkg-kept", model=pointer.model, kept=old.revision, offered=pointer.revision
                )
                return False
            atomic_write_bytes(self.pointer_path(pointer.model), pointer.to_json())
        return True

    def referenced_digests(self) -> set[str]:
        """Digests named by the node LKG pointers in this directory.

        Damaged and unsafe files are skipped; at most ``nodefile.MAX_SCAN`` entries are looked at.
        """
        found: set[str] = set()
        for path in scan(self.dir, ".json"):
            try:
                data = read_node_file(path, max_bytes=MAX_POINTER_BYTES)
                found.add(Pointer.from_json(data).digest)
            except (OSError, StoreError):
                continue
        return found


def read_mounted(directory: Path, model: str) -> Pointer | None:
    """The cluster LKG pointer of ``model`` from a mounted ConfigMap directory.

    None if absent; ``InvalidPointer`` if it does not validate or names another model;
    ``UnsafeNodeFile`` if it does not lead to a small regular file (the kubelet's ``..data``
    links are followed).
    """
    return _read(Path(directory) / f"{check_name('model', model)}.json", model, follow=True)


def _read(path: Path, model: str, *, follow: bool) -> Pointer | None:
    try:
        data = read_node_file(path, max_bytes=MAX_POINTER_BYTES, follow=follow)
    except FileNotFoundError:
        return None
    try:
        pointer = Pointer.from_json(data)
    except InvalidPointer as exc:
        raise InvalidPointer(f"{path}: {exc}") from None
    if pointer.model != model:
        raise InvalidPointer(f"{path}: model is {pointer.model!r}, not {model!r}")
    return pointer
