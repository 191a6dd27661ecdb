"""Artifact digests that users can reproduce with coreutils.

A single-file artifact's digest is the sha256 of its bytes (``sha256sum FILE``). A directory's
digest is the sha256 of the ``sha256sum`` lines of every regular file, sorted by path bytes::

    cd ARTIFACT && find . -type f -printf '%P\\n' | LC_ALL=C sort \\
        | xargs -d '\\n' sha256sum -- | sha256sum

Each line is ``"<hex>  <relpath>\\n"``; a path containing a backslash or a carriage return is
escaped the way coreutils >= 9 does (line prefixed by ``\\``, ``\\`` -> ``\\\\``, CR -> ``\\r``). A
path with a newline cannot go through that pipeline and is rejected. Artifacts hold regular
files and directories only: a symlink, device, FIFO or socket is an ``IntegrityError``. An empty
directory's digest is the sha256 of no lines. Files are read in 1 MiB chunks. A path that
disappears while it is read raises ``FileNotFoundError`` (the caller decides if that is a race).

Hash once: a fetcher that hashed every file while writing it hands the per-file hashes over as a
``FileHashes`` map, and ``listed_digest`` assembles the same digest from them (``assemble``, the
one place the line rule is applied) after checking, without reading a byte, that the tree on disk
holds exactly those regular files at those sizes.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from pointercache.errors import IntegrityError

CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class FileHash:
    """The sha256 and size of one regular file, computed while it was written."""

    sha256: str
    """Lowercase hex sha256 of the file's bytes."""
    size: int
    """Bytes written."""


FileHashes = Mapping[bytes, FileHash]
"""Relative path (bytes, ``/``-separated, as ``os.fsencode`` gives it) → its ``FileHash``."""


class StreamHasher:
    """Incremental sha256 for bytes arriving in chunks (downloads)."""

    def __init__(self) -> None:
        self._h = hashlib.sha256()
        self.size = 0

    def update(self, data: bytes | memoryview) -> None:
        """Add ``data`` to the digest."""
        self._h.update(data)
        self.size += len(data)

    def hexdigest(self) -> str:
        """Return the lowercase hex digest of everything added so far."""
        return self._h.hexdigest()

    def digest(self) -> str:
        """Return ``sha256:<hex>``."""
        return "sha256:" + self.hexdigest()


def file_sha256(path: Path) -> str:
    """Return the lowercase hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def tree_digest(path: Path) -> tuple[str, int]:
    """Return ``("sha256:<hex>", total_bytes)`` of a file or directory artifact."""
    path = Path(path)
    try:
        st = path.stat()
        if stat.S_ISREG(st.st_mode):
            return "sha256:" + file_sha256(path), st.st_size
        if not stat.S_ISDIR(st.st_mode):
            raise IntegrityError(f"{path}: not a regular file or directory")
        top = os.fsencode(path)
        lines = []
        total = 0
        for rel in _regular_files(path, b""):
            full = os.path.join(top, rel)  # noqa: PTH118 - bytes paths sort as bytes
            total += os.stat(full).st_size  # noqa: PTH116
            lines.append((rel, file_sha256(Path(os.fsdecode(full)))))
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise IntegrityError(f"{path}: cannot read artifact ({exc.strerror})") from exc
    return assemble(lines), total


def assemble(lines: Iterable[tuple[bytes, str]]) -> str:
    """``sha256:<hex>`` of a directory from ``(relpath, file sha256 hex)`` pairs, in any order.

    The one home of the line rule: sha256 over ``sha256sum`` lines sorted by path bytes.
    """
    outer = hashlib.sha256()
    for rel, hexdigest in sorted(lines):
        outer.update(_sum_line(hexdigest, rel))
    return "sha256:" + outer.hexdigest()


def listed_digest(path: Path, hashes: FileHashes) -> tuple[str, int] | None:
    """``tree_digest`` of directory ``path`` from hashes computed while writing, without a re-read.

    The tree is walked (names and sizes only): it must hold exactly the listed regular files at
    the listed sizes. Returns None when it does not (a file missing, added or of another size:
    the caller hashes the tree instead); a symlink, device or name with a newline is an
    ``IntegrityError`` as in ``tree_digest``.
    """
    path = Path(path)
    if not path.is_dir() or path.is_symlink():
        return None
    try:
        top = os.fsencode(path)
        found = _regular_files(path, b"")
        if len(found) != len(hashes):
            return None
        total = 0
        for rel in found:
            listed = hashes.get(rel)
            if listed is None or os.stat(os.path.join(top, rel)).st_size != listed.size:  # noqa: PTH116, PTH118
                return None
            total += listed.size
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise IntegrityError(f"{path}: cannot read artifact ({exc.strerror})") from exc
    return assemble((rel, h.sha256) for rel, h in hashes.items()), total


def _regular_files(root: Path, prefix: bytes) -> list[bytes]:
    """Return relative paths (bytes) of every regular file under ``root``; reject the rest."""
    out: list[bytes] = []
    top = os.fsencode(root)
    with os.scandir(os.path.join(top, prefix) if prefix else top) as it:  # noqa: PTH118
        for entry in it:
            rel = prefix + b"/" + entry.name if prefix else entry.name
            if entry.is_dir(follow_symlinks=False):
                out.extend(_regular_files(root, rel))
            elif entry.is_file(follow_symlinks=False):
                if b"\n" in rel:
                    raise IntegrityError(f"{root}: file name with a newline: {rel!r}")
                out.append(rel)
            else:
                raise IntegrityError(f"{root}: {os.fsdecode(rel)!r} is not a regular file")
    return out


def _sum_line(hexdigest: str, rel: bytes) -> bytes:
    """Format one ``sha256sum`` output line, escaping like coreutils >= 9."""
    if b"\\" in rel or b"\r" in rel:
        escaped = rel.replace(b"\\", b"\\\\").replace(b"\r", b"\\r")
        return b"\\" + hexdigest.encode() + b"  " + escaped + b"\n"
    return hexdigest.encode() + b"  " + rel + b"\n"
