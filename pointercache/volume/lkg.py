"""Last-known-good pointers on disk, one per model **and selector**: the node's
(``<lkg-dir>/<entry>``) and the cluster's as the kubelet mounts it (an ``optional`` ConfigMap
volume, ``<dir>/<entry>``), where ``<entry>`` is ``layout.lkg_entry(model, selector)``.

A pod only ever falls back to what a pod with its own selector served: a canary
(``alias:candidate``) and production (``alias:production``) on one node have separate entries.
Entries written before per-selector names (``<model>.json``) are read by the default selector
only, and only while its own entry does not exist (``layout.legacy_lkg_entry``).

A node LKG pointer is written atomically under a per-entry ``flock``; ``model.revision.may_replace``
decides whether it may be overwritten. The content-addressed cache beside it is
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
from pointercache.model.candidate import Selector
from pointercache.model.pointer import MAX_POINTER_BYTES, Pointer
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

    def pointer_path(self, model: str, selector: Selector) -> Path:
        """Where the node LKG pointer of ``model`` served by ``selector`` lives."""
        return self.dir / layout.lkg_entry(model, selector)

    def read(self, model: str, selector: Selector) -> Pointer | None:
        """The node LKG pointer of (``model``, ``selector``): None if absent.

        ``InvalidPointer`` if it does not validate or names another model; ``UnsafeNodeFile`` if
        it is a link, FIFO, device, directory or over 1 MiB; ``OSError`` if unreadable.
        """
        return read_entry(self.dir, model, selector)

    def write(self, pointer: Pointer, selector: Selector, *, lock_wait: float = LOCK_WAIT) -> bool:
        """Store ``pointer`` (just confirmed by a registry) atomically; return if written.

        ``model.revision.may_replace`` decides; for the node LKG it always may, so a planted
        or bogus entry never keeps a registry's answer out. A damaged or unsafe file in its
        place is replaced. ``StoreLocked`` if another process holds the entry's lock for
        ``lock_wait`` seconds; ``OSError`` (``ENOSPC``...) if it cannot be written.
        """
        from pointercache.model.revision import may_replace

        self.dir.mkdir(parents=True, exist_ok=True)
        entry = layout.lkg_entry(pointer.model, selector)
        with self.locks.hold(f"lkg-{entry}", timeout=lock_wait):
            try:
                old = read_entry(self.dir, pointer.model, selector, legacy=False)
            except (StoreError, OSError) as exc:
                log.warning("lkg-damaged", model=pointer.model, selector=str(selector), error=exc)
                old = None
            if old is not None and not may_replace(old, pointer, shared=False):
                return False
            atomic_write_bytes(self.dir / entry, pointer.to_json())
        return True

    def referenced_digests(self) -> set[str]:
        """Digests named by the node LKG pointers in this directory.

        Damaged and unsafe files are skipped; at most ``nodefile.MAX_SCAN`` entries are looked at.
        """
        found: set[str] = set()
        for path in scan(self.dir, layout.LKG_SUFFIX):
            try:
                data = read_node_file(path, max_bytes=MAX_POINTER_BYTES)
                found.add(Pointer.from_json(data).digest)
            except (OSError, StoreError):
                continue
        return found


def read_mounted(directory: Path, model: str, selector: Selector) -> Pointer | None:
    """The cluster LKG pointer of (``model``, ``selector``) from a mounted ConfigMap directory.

    None if absent; ``InvalidPointer`` if it does not validate or names another model;
    ``UnsafeNodeFile`` if it does not lead to a small regular file (the kubelet's ``..data``
    links are followed).
    """
    return read_entry(Path(directory), model, selector, follow=True)


def read_entry(
    directory: Path, model: str, selector: Selector, *, legacy: bool = True, follow: bool = False
) -> Pointer | None:
    """The entry of (``model``, ``selector``) in ``directory``, else (``legacy``) the
    pre-selector ``<model>.json`` where ``layout.legacy_lkg_entry`` allows it; None if neither.

    Read through ``volume.nodefile``: ``follow`` only for the kubelet's links of a mounted
    ConfigMap, never in the node directory.
    """
    return read_entry_from(directory, model, selector, legacy=legacy, follow=follow)[0]


def read_entry_from(
    directory: Path, model: str, selector: Selector, *, legacy: bool = True, follow: bool = False
) -> tuple[Pointer | None, Path]:
    """``read_entry``, and the file the answer came from (the selector's own entry when
    neither exists), so a fallback names the file it actually served."""
    own = directory / layout.lkg_entry(model, selector)
    pointer = _read(own, model, follow=follow)
    old = layout.legacy_lkg_entry(model, selector) if legacy else None
    if pointer is None and old is not None:
        pointer = _read(directory / old, model, follow=follow)
        if pointer is not None:
            return pointer, directory / old
    return pointer, own


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
