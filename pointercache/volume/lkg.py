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
"""

from __future__ import annotations

from pathlib import Path

from pointercache.base.log import log
from pointercache.errors import InvalidPointer
from pointercache.model.candidate import Selector
from pointercache.model.pointer import Pointer
from pointercache.volume import layout
from pointercache.volume.fsutil import atomic_write_bytes
from pointercache.volume.locks import NodeLocks


class NodeLKG:
    """Node-local LKG pointers in ``directory`` (a hostPath or PVC that outlives pods)."""

    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)
        self.locks = NodeLocks(self.dir / layout.NODE_LOCKS)

    def pointer_path(self, model: str, selector: Selector) -> Path:
        """Where the node LKG pointer of ``model`` served by ``selector`` lives."""
        return self.dir / layout.lkg_entry(model, selector)

    def read(self, model: str, selector: Selector) -> Pointer | None:
        """The node LKG pointer of (``model``, ``selector``): None if absent, ``InvalidPointer``
        if damaged or written for another model."""
        return read_entry(self.dir, model, selector)

    def write(self, pointer: Pointer, selector: Selector) -> bool:
        """Store ``pointer`` (just confirmed by a registry) atomically; return if written.

        ``model.revision.may_replace`` decides; for the node LKG it always may, so a planted
        or bogus entry never keeps a registry's answer out.
        """
        from pointercache.model.revision import may_replace

        self.dir.mkdir(parents=True, exist_ok=True)
        entry = layout.lkg_entry(pointer.model, selector)
        with self.locks.hold(f"lkg-{entry}", timeout=None):
            try:
                old = read_entry(self.dir, pointer.model, selector, legacy=False)
            except InvalidPointer as exc:
                log.warning("lkg-damaged", model=pointer.model, selector=str(selector), error=exc)
                old = None
            if old is not None and not may_replace(old, pointer, shared=False):
                return False
            atomic_write_bytes(self.dir / entry, pointer.to_json())
        return True

    def referenced_digests(self) -> set[str]:
        """Digests named by any node LKG pointer in this directory (damaged ones are skipped)."""
        found: set[str] = set()
        for path in self.dir.glob(f"*{layout.LKG_SUFFIX}"):
            try:
                found.add(Pointer.read(path).digest)
            except (OSError, InvalidPointer):
                continue
        return found


def read_mounted(directory: Path, model: str, selector: Selector) -> Pointer | None:
    """The cluster LKG pointer of (``model``, ``selector``) from a mounted ConfigMap directory.

    None if absent; ``InvalidPointer`` if it does not validate or names another model.
    """
    return read_entry(Path(directory), model, selector)


def read_entry(
    directory: Path, model: str, selector: Selector, *, legacy: bool = True
) -> Pointer | None:
    """The entry of (``model``, ``selector``) in ``directory``, else (``legacy``) the
    pre-selector ``<model>.json`` where ``layout.legacy_lkg_entry`` allows it; None if neither.
    """
    pointer = _read(directory / layout.lkg_entry(model, selector), model)
    old = layout.legacy_lkg_entry(model, selector) if legacy else None
    if pointer is None and old is not None:
        pointer = _read(directory / old, model)
    return pointer


def _read(path: Path, model: str) -> Pointer | None:
    try:
        pointer = Pointer.read(path)
    except FileNotFoundError:
        return None
    if pointer.model != model:
        raise InvalidPointer(f"{path}: model is {pointer.model!r}, not {model!r}")
    return pointer
