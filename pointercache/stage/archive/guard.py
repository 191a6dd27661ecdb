"""What every archive member reader shares: limits, name checks, and the guarded writer.

A reader (``archive_tar``, ``archive_zip``) turns each member into a call to ``safe_parts`` and
``Tree.mkdir`` / ``Tree.write``, counting against a ``Budget``; nothing here knows a format.
"""

from __future__ import annotations

import contextlib
import hashlib
import lzma
import os
import re
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from pointercache.errors import TooLarge, UnsafeArchive
from pointercache.model.digest import FileHash

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

MAX_NAME_BYTES = 1024
MAX_COMPONENT_BYTES = 255
MAX_DEPTH = 64
_CHUNK = 1 << 20
_BAD_CHARS = re.compile(r"[\x00-\x1f\x7f\\]")
READ_ERRORS = (tarfile.TarError, zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError)
"""What the stdlib readers raise on a corrupt archive (besides ``OSError``)."""
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True, slots=True)
class ArchiveLimits:
    """Bounds applied while an archive is extracted."""

    max_total_bytes: int = 64 << 30
    """Bytes of file content written, in total (64 GiB, as ``--max-artifact-bytes``)."""
    max_entries: int = 100_000
    """Members (files and directories) in one archive."""
    max_ratio: float = 200.0
    """Uncompressed bytes per byte of archive; above it the archive counts as a bomb."""
    ratio_floor: int = 64 << 20
    """The ratio is only enforced once more than this many bytes (64 MiB) were produced."""


def safe_parts(name: str) -> tuple[str, ...]:
    """Normalise an entry name into path components, or raise ``UnsafeArchive``."""
    shown = repr(name[:200])
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise UnsafeArchive(f"entry {shown}: name is not valid UTF-8") from None
    if size > MAX_NAME_BYTES:
        raise UnsafeArchive(f"entry {shown}: name longer than {MAX_NAME_BYTES} bytes")
    if _BAD_CHARS.search(name):
        raise UnsafeArchive(f"entry {shown}: backslash, NUL or control character in name")
    if name.startswith("/"):
        raise UnsafeArchive(f"entry {shown}: absolute path")
    parts = tuple(p for p in name.split("/") if p not in {"", "."})
    if ".." in parts:
        raise UnsafeArchive(f"entry {shown}: '..' component")
    if len(parts) > MAX_DEPTH or any(len(p.encode()) > MAX_COMPONENT_BYTES for p in parts):
        raise UnsafeArchive(f"entry {shown}: path too deep or a component too long")
    return parts


class Readable(Protocol):
    """A binary stream to read from (a file, a decompressor, an archive member)."""

    def read(self, size: int = -1, /) -> bytes:
        """Return up to ``size`` bytes; ``b""`` at the end."""


class Budget:
    """Counts entries and bytes against the limits while streaming."""

    def __init__(self, limits: ArchiveLimits, archive_bytes: int) -> None:
        self.limits = limits
        self.entries = 0
        self.written = 0
        self._ratio_cap = max(limits.ratio_floor, int(limits.max_ratio * max(archive_bytes, 1)))

    def entry(self) -> None:
        """Count one more member; refuse past ``max_entries``."""
        self.entries += 1
        if self.entries > self.limits.max_entries:
            raise TooLarge(f"archive has more than {self.limits.max_entries} entries")

    def declared(self, name: str, size: int) -> None:
        """Refuse early when a header already promises too much (never trusted otherwise)."""
        if size < 0 or self.written + size > self.limits.max_total_bytes:
            raise TooLarge(
                f"entry {name!r}: {size} bytes would exceed the archive limit "
                f"of {self.limits.max_total_bytes} bytes"
            )

    def wrote(self, n: int) -> None:
        """Count ``n`` bytes of file content written; refuse past the total and the ratio."""
        self.written += n
        if self.written > self.limits.max_total_bytes:
            raise TooLarge(f"archive expands past {self.limits.max_total_bytes} bytes")
        self.produced(self.written)

    def produced(self, total: int) -> None:
        """Refuse when ``total`` decompressed bytes exceed the compression-ratio cap."""
        if total > self._ratio_cap:
            raise TooLarge(
                f"archive expands more than {self.limits.max_ratio:g} times "
                "its size (compression bomb)"
            )


class Counting:
    """A read-only stream that counts decompressed bytes against the ratio limit."""

    def __init__(self, src: Readable, budget: Budget) -> None:
        self._src = src
        self._budget = budget
        self.total = 0

    def read(self, size: int = -1) -> bytes:
        """Read from the source, counting; a corrupt stream is ``UnsafeArchive``."""
        try:
            data = self._src.read(size)
        except (OSError, *READ_ERRORS) as exc:  # gzip.BadGzipFile is an OSError
            raise UnsafeArchive(f"corrupt compressed stream: {exc}") from exc
        self.total += len(data)
        self._budget.produced(self.total)
        return data


class Tree:
    """Creates directories and files under ``dest`` through directory descriptors only."""

    def __init__(self, dest: Path) -> None:
        self.root = os.open(dest, _DIR_FLAGS)
        self.closed = False
        self.kinds: dict[tuple[str, ...], str] = {}
        self.hashes: dict[bytes, FileHash] = {}
        """Every written file's sha256 and size, computed while writing (``model.digest``)."""

    def claim(self, parts: tuple[str, ...], kind: str) -> None:
        """Record an entry; refuse duplicates and file/directory conflicts."""
        shown = "/".join(parts)
        for i in range(1, len(parts)):
            if self.kinds.setdefault(parts[:i], "dir") != "dir":
                raise UnsafeArchive(f"entry {shown!r}: {'/'.join(parts[:i])!r} is a file")
        old = self.kinds.get(parts)
        if old is not None and (old != kind or kind == "file"):
            raise UnsafeArchive(f"entry {shown!r}: duplicate or conflicting entry")
        self.kinds[parts] = kind

    def _open_dir(self, parts: tuple[str, ...]) -> int:
        fd = os.dup(self.root)
        try:
            for part in parts:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o755, dir_fd=fd)
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = child
        except OSError as exc:
            os.close(fd)
            raise UnsafeArchive(f"cannot create directory {'/'.join(parts)!r}: {exc}") from exc
        return fd

    def mkdir(self, parts: tuple[str, ...]) -> None:
        """Create the directory ``parts`` (and its parents)."""
        self.claim(parts, "dir")
        os.close(self._open_dir(parts))

    def write(
        self, parts: tuple[str, ...], read: Callable[[], bytes], budget: Budget, declared: int
    ) -> None:
        """Create the new file ``parts`` from ``read``; its real size must be ``declared``."""
        self.claim(parts, "file")
        parent = self._open_dir(parts[:-1])
        try:
            fd = os.open(parts[-1], _FILE_FLAGS, 0o644, dir_fd=parent)
        except OSError as exc:
            raise UnsafeArchive(f"cannot create {'/'.join(parts)!r}: {exc}") from exc
        finally:
            os.close(parent)
        size, sha = 0, hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            while chunk := read():
                budget.wrote(len(chunk))
                size += len(chunk)
                out.write(chunk)
                sha.update(chunk)
        if size != declared:
            raise UnsafeArchive(f"entry {'/'.join(parts)!r}: declares {declared} bytes, has {size}")
        self.hashes[os.fsencode("/".join(parts))] = FileHash(sha.hexdigest(), size)

    def close(self) -> None:
        """Release the root descriptor.

        Nothing is fsynced here: the extracted tree is staging, made durable with the rest of
        the version by one ``sync_tree`` when the store installs it (and by the node cache's put).
        """
        if self.closed:
            return
        self.closed = True
        os.close(self.root)


def reader(src: Readable, name: str) -> Callable[[], bytes]:
    """Return a chunk reader for member ``name``; corrupt data is ``UnsafeArchive``."""

    def read() -> bytes:
        try:
            return src.read(_CHUNK)
        except (OSError, *READ_ERRORS) as exc:
            raise UnsafeArchive(f"entry {name!r}: corrupt data: {exc}") from exc

    return read
