"""Last-known-good pointers on disk: the node's (``<lkg-dir>/<model>.json``) and the cluster's
as the kubelet mounts it (an ``optional`` ConfigMap volume, ``<dir>/<model>.json``).

A node LKG pointer is written atomically under a per-model ``flock`` and its revision is never
lowered (``model.revision.may_replace``). The content-addressed cache beside it is
``pointercache.volume.cas``.
"""

from __future__ import annotations

from pathlib import Path

from pointercache.base.log import log
from pointercache.errors import InvalidPointer
from pointercache.model.pointer import Pointer, check_name
from pointercache.volume import layout
from pointercache.volume.fsutil import atomic_write_bytes
from pointercache.volume.locks import NodeLocks


class NodeLKG:
    """Node-local LKG pointers in ``directory`` (a hostPath or PVC that outlives pods)."""

    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)
        self.locks = NodeLocks(self.dir / layout.NODE_LOCKS)

    def pointer_path(self, model: str) -> Path:
        """Where the node LKG pointer of ``model`` lives."""
        return self.dir / f"{check_name('model', model)}.json"

    def read(self, model: str) -> Pointer | None:
        """The node LKG pointer of ``model``: None if absent, ``InvalidPointer`` if damaged."""
        return _read(self.pointer_path(model), model)

    def write(self, pointer: Pointer) -> bool:
        """Store ``pointer`` atomically unless it would lower the revision; return if written.

        A lower revision is accepted only for the same digest (a provenance refresh).
        """
        from pointercache.model.revision import may_replace

        self.dir.mkdir(parents=True, exist_ok=True)
        with self.locks.hold(f"model-{pointer.model}", timeout=None):
            try:
                old = self.read(pointer.model)
            except InvalidPointer as exc:
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
        """Digests named by any node LKG pointer in this directory (damaged ones are skipped)."""
        found: set[str] = set()
        for path in self.dir.glob("*.json"):
            try:
                found.add(Pointer.read(path).digest)
            except (OSError, InvalidPointer):
                continue
        return found


def read_mounted(directory: Path, model: str) -> Pointer | None:
    """The cluster LKG pointer of ``model`` from a mounted ConfigMap directory.

    None if absent; ``InvalidPointer`` if it does not validate or names another model.
    """
    return _read(Path(directory) / f"{check_name('model', model)}.json", model)


def _read(path: Path, model: str) -> Pointer | None:
    try:
        pointer = Pointer.read(path)
    except FileNotFoundError:
        return None
    if pointer.model != model:
        raise InvalidPointer(f"{path}: model is {pointer.model!r}, not {model!r}")
    return pointer
