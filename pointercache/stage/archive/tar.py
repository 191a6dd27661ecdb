"""Reading .tar and .tar.gz members for ``pointercache.stage.archive``, as one forward stream.

The archive is read with ``tarfile`` in stream mode (``r|``) through a counting stream, and a
strict ``TarInfo`` that refuses corrupt headers instead of ending the archive early and refuses
more than ``MAX_META_HEADERS`` pax / GNU long-name headers chained before one member (``tarfile``
reads each chained header by recursing, so hundreds of them end in ``RecursionError``); each
member goes through the shared checks of ``archive_guard``. ``tarfile.extract*`` is never
called.
"""

from __future__ import annotations

import contextvars
import gzip
import tarfile
from typing import TYPE_CHECKING, Any, Self

from pointercache.errors import UnsafeArchive
from pointercache.stage.archive.guard import (
    READ_ERRORS,
    Budget,
    Counting,
    Readable,
    Tree,
    reader,
    safe_parts,
)

if TYPE_CHECKING:
    from pathlib import Path

MAX_HEADER_BYTES = 1 << 20
"""Largest pax / GNU long-name header accepted (read into memory by tarfile)."""
MAX_META_HEADERS = 8
"""Pax / GNU long-name headers accepted before one member (real archives chain two or three)."""
_DEPTH: contextvars.ContextVar[int] = contextvars.ContextVar("tar_meta_depth", default=0)
_HEADER_TYPES = frozenset(
    {tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE}
    | {tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK}
)


class _StrictInfo(tarfile.TarInfo):
    """TarInfo that turns a corrupt header into an error instead of a silent end of archive."""

    @classmethod
    def fromtarfile(cls, tarfile: Any) -> Self:
        """Read the next member; count the extended headers chained before it."""
        depth = _DEPTH.get()
        if depth > MAX_META_HEADERS:
            raise UnsafeArchive(f"more than {MAX_META_HEADERS} extended headers before one member")
        token = _DEPTH.set(depth + 1)
        try:
            return super().fromtarfile(tarfile)
        finally:
            _DEPTH.reset(token)

    @classmethod
    def frombuf(cls, buf: bytes | bytearray, encoding: str, errors: str) -> Self:
        """Parse one header block; refuse bad checksums, negative sizes, huge meta headers."""
        if not buf or (len(buf) == tarfile.BLOCKSIZE and not buf.strip(b"\0")):
            return super().frombuf(buf, encoding, errors)  # the regular end of the archive
        try:
            obj = super().frombuf(buf, encoding, errors)
        except tarfile.HeaderError as exc:
            raise UnsafeArchive(f"corrupt tar header: {exc}") from exc
        if obj.size < 0:
            raise UnsafeArchive(f"entry {obj.name!r}: negative size in tar header")
        if obj.type in _HEADER_TYPES and obj.size > MAX_HEADER_BYTES:
            raise UnsafeArchive(f"tar extended header of {obj.size} bytes is over the limit")
        return obj


def extract_tar(path: Path, tree: Tree, budget: Budget, *, gz: bool) -> None:
    """Write every member of the tar (gzip-compressed when ``gz``) at ``path`` into ``tree``."""
    with path.open("rb") as raw:
        src: Readable = gzip.GzipFile(fileobj=raw, mode="rb") if gz else raw
        counting = Counting(src, budget)
        try:
            with tarfile.open(fileobj=counting, mode="r|", tarinfo=_StrictInfo) as tar:  # type: ignore[call-overload]
                for member in tar:
                    _tar_member(tar, member, tree, budget)
        except READ_ERRORS as exc:
            raise UnsafeArchive(f"{path.name}: not a readable tar archive: {exc}") from exc
        except RecursionError as exc:  # a structure nested deeper than any reader should follow
            raise UnsafeArchive(f"{path.name}: nested too deeply to read") from exc


def _tar_member(tar: tarfile.TarFile, member: tarfile.TarInfo, tree: Tree, budget: Budget) -> None:
    budget.entry()
    name = member.name
    if member.type not in {tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.DIRTYPE}:
        kind = "link" if member.issym() or member.islnk() else "special member"
        raise UnsafeArchive(f"entry {name[:200]!r}: {kind} (type {member.type!r}) refused")
    parts = safe_parts(name)
    if member.isdir():
        if parts:
            tree.mkdir(parts)
        return
    if not parts:
        raise UnsafeArchive(f"entry {name!r}: a file without a name")
    budget.declared(name, member.size)
    src = tar.extractfile(member)
    assert src is not None
    with src:
        tree.write(parts, reader(src, name), budget, member.size)
