"""Safe extraction of model archives (.tar, .tar.gz, .tgz, .zip) into a fresh directory.

Archives come from registries, so every entry is untrusted. We never call ``tarfile.extract*``
or ``zipfile.extract*`` (their filters have had bypasses: CVE-2024-12718, CVE-2025-4138,
CVE-2025-4330, CVE-2025-4435, CVE-2025-4517). Instead each member is checked here and written
by us, relative to directory file descriptors we created, with ``O_NOFOLLOW | O_EXCL``:

- only regular files and directories; symlinks, hard links, devices, FIFOs, sparse and
  other special members are refused (model artifacts are plain files; re-pack with
  ``tar --dereference`` if yours has links);
- names are normalised (``.`` and empty components dropped) and refused when absolute, holding
  ``..``, a backslash, NUL or another control character, not UTF-8, or too long / too deep;
- two entries with the same normalised name, or a file that is also a directory, are refused;
- the entry count, the bytes written and the compression ratio are counted while streaming,
  never taken from headers (a header may lie).

Modes, owners and times from the archive are ignored: files are 0644, directories 0755.
"""

from __future__ import annotations

import contextlib
import gzip
import lzma
import os
import re
import shutil
import stat
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, Self

from pointercache.errors import TooLarge, UnsafeArchive
from pointercache.log import log

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

SUFFIXES = (".tar", ".tar.gz", ".tgz", ".zip")
"""File name endings recognised as archives."""
MAX_NAME_BYTES = 1024
MAX_COMPONENT_BYTES = 255
MAX_DEPTH = 64
MAX_HEADER_BYTES = 1 << 20
"""Largest pax / GNU long-name header accepted (read into memory by tarfile)."""
_CHUNK = 1 << 20
_BAD_CHARS = re.compile(r"[\x00-\x1f\x7f\\]")
_HEADER_TYPES = frozenset(
    {tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE}
    | {tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK}
)
_READ_ERRORS = (tarfile.TarError, zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError)
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


def is_archive(name: str) -> bool:
    """Tell whether ``name`` ends like an archive we extract (.tar, .tar.gz, .tgz, .zip)."""
    return name.lower().endswith(SUFFIXES)


def archive_kind(path: Path) -> str:
    """Return ``"zip"``, ``"tar"`` or ``"tar.gz"`` by suffix, else by magic bytes."""
    name = path.name.lower()
    if name.endswith(".zip"):
        return "zip"
    if name.endswith((".tar.gz", ".tgz")):
        return "tar.gz"
    if name.endswith(".tar"):
        return "tar"
    with path.open("rb") as fh:
        head = fh.read(265)
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip"
    if head.startswith(b"\x1f\x8b"):
        return "tar.gz"
    if head[257:262] == b"ustar":
        return "tar"
    raise UnsafeArchive(f"{path.name}: not a supported archive (.tar, .tar.gz, .tgz, .zip)")


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


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class _Budget:
    """Counts entries and bytes against the limits while streaming."""

    def __init__(self, limits: ArchiveLimits, archive_bytes: int) -> None:
        self.limits = limits
        self.entries = 0
        self.written = 0
        self._ratio_cap = max(limits.ratio_floor, int(limits.max_ratio * max(archive_bytes, 1)))

    def entry(self) -> None:
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
        self.written += n
        if self.written > self.limits.max_total_bytes:
            raise TooLarge(f"archive expands past {self.limits.max_total_bytes} bytes")
        self.produced(self.written)

    def produced(self, total: int) -> None:
        if total > self._ratio_cap:
            raise TooLarge(
                f"archive expands more than {self.limits.max_ratio:g} times "
                "its size (compression bomb)"
            )


class _Counting:
    """A read-only stream that counts decompressed bytes against the ratio limit."""

    def __init__(self, src: _Readable, budget: _Budget) -> None:
        self._src = src
        self._budget = budget
        self.total = 0

    def read(self, size: int = -1) -> bytes:
        try:
            data = self._src.read(size)
        except (OSError, *_READ_ERRORS) as exc:  # gzip.BadGzipFile is an OSError
            raise UnsafeArchive(f"corrupt compressed stream: {exc}") from exc
        self.total += len(data)
        self._budget.produced(self.total)
        return data


class _StrictInfo(tarfile.TarInfo):
    """TarInfo that turns a corrupt header into an error instead of a silent end of archive."""

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


class _Tree:
    """Creates directories and files under ``dest`` through directory descriptors only."""

    def __init__(self, dest: Path) -> None:
        self.root = os.open(dest, _DIR_FLAGS)
        self.closed = False
        self.kinds: dict[tuple[str, ...], str] = {}

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
        self, parts: tuple[str, ...], read: Callable[[], bytes], budget: _Budget, declared: int
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
        size = 0
        with os.fdopen(fd, "wb") as out:
            while chunk := read():
                budget.wrote(len(chunk))
                size += len(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if size != declared:
            raise UnsafeArchive(f"entry {'/'.join(parts)!r}: declares {declared} bytes, has {size}")

    def close(self, *, sync: bool) -> None:
        """fsync every directory (when ``sync``) and release the root descriptor."""
        if self.closed:
            return
        try:
            if sync:
                for parts in sorted((p for p, k in self.kinds.items() if k == "dir"), key=len):
                    fd = self._open_dir(parts)
                    os.fsync(fd)
                    os.close(fd)
                os.fsync(self.root)
        finally:
            self.closed = True
            os.close(self.root)


def _reader(src: _Readable, name: str) -> Callable[[], bytes]:
    def read() -> bytes:
        try:
            return src.read(_CHUNK)
        except (OSError, *_READ_ERRORS) as exc:
            raise UnsafeArchive(f"entry {name!r}: corrupt data: {exc}") from exc

    return read


def _extract_tar(path: Path, tree: _Tree, budget: _Budget, *, gz: bool) -> None:
    with path.open("rb") as raw:
        src: _Readable = gzip.GzipFile(fileobj=raw, mode="rb") if gz else raw
        counting = _Counting(src, budget)
        try:
            with tarfile.open(fileobj=counting, mode="r|", tarinfo=_StrictInfo) as tar:  # type: ignore[call-overload]
                for member in tar:
                    _tar_member(tar, member, tree, budget)
        except _READ_ERRORS as exc:
            raise UnsafeArchive(f"{path.name}: not a readable tar archive: {exc}") from exc


def _tar_member(
    tar: tarfile.TarFile, member: tarfile.TarInfo, tree: _Tree, budget: _Budget
) -> None:
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
        tree.write(parts, _reader(src, name), budget, member.size)


def _extract_zip(path: Path, tree: _Tree, budget: _Budget) -> None:
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            if len(infos) > budget.limits.max_entries:
                raise TooLarge(f"archive has more than {budget.limits.max_entries} entries")
            for info in infos:
                _zip_member(zf, info, tree, budget)
    except (*_READ_ERRORS, NotImplementedError) as exc:
        raise UnsafeArchive(f"{path.name}: not a readable zip archive: {exc}") from exc


def _zip_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, tree: _Tree, budget: _Budget) -> None:
    budget.entry()
    name = info.orig_filename
    mode = info.external_attr >> 16 if info.create_system == 3 else 0  # noqa: PLR2004 - Unix
    ftype = stat.S_IFMT(mode)
    if ftype not in {0, stat.S_IFREG, stat.S_IFDIR}:
        kind = "link" if stat.S_ISLNK(mode) else "special member"
        raise UnsafeArchive(f"entry {name[:200]!r}: {kind} refused")
    if info.flag_bits & 0x1:
        raise UnsafeArchive(f"entry {name[:200]!r}: encrypted entries are not supported")
    parts = safe_parts(name)
    if name.endswith("/") or ftype == stat.S_IFDIR:
        if info.file_size:
            raise UnsafeArchive(f"entry {name[:200]!r}: a directory with content")
        if parts:
            tree.mkdir(parts)
        return
    if not parts:
        raise UnsafeArchive(f"entry {name!r}: a file without a name")
    budget.declared(name, info.file_size)
    try:
        src = zf.open(info)
    except (*_READ_ERRORS, NotImplementedError, RuntimeError) as exc:
        raise UnsafeArchive(f"entry {name[:200]!r}: cannot be read: {exc}") from exc
    with src:
        tree.write(parts, _reader(src, name), budget, info.file_size)


def _prepare(dest: Path) -> bool:
    """Create ``dest`` (True) or accept an existing empty real directory (False)."""
    try:
        dest.mkdir(0o755)
    except FileExistsError:
        if not stat.S_ISDIR(os.lstat(dest).st_mode) or _has_entries(dest):
            raise FileExistsError(
                f"extraction target {dest} is not a new, empty directory"
            ) from None
        return False
    return True


def _has_entries(path: Path) -> bool:
    with os.scandir(path) as entries:
        return any(entries)


def _discard(dest: Path, *, created: bool) -> None:
    if created:
        shutil.rmtree(dest, ignore_errors=True)
        return
    with os.scandir(dest) as entries:
        remaining = list(entries)
    for entry in remaining:
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            os.unlink(entry.path)  # noqa: PTH108 - a DirEntry path from scandir


def extract(archive: Path, dest: Path, limits: ArchiveLimits | None = None) -> int:
    """Extract ``archive`` into the new directory ``dest``; return the bytes written.

    Raises ``UnsafeArchive`` or ``TooLarge``; on any failure ``dest`` is left empty (or removed
    when this call created it), and nothing is ever written outside it.
    """
    limits = limits or ArchiveLimits()
    kind = archive_kind(archive)
    budget = _Budget(limits, archive.stat().st_size)
    created = _prepare(dest)
    tree = _Tree(dest)
    try:
        if kind == "zip":
            _extract_zip(archive, tree, budget)
        else:
            _extract_tar(archive, tree, budget, gz=kind == "tar.gz")
        tree.close(sync=True)
    except BaseException:
        tree.close(sync=False)
        _discard(dest, created=created)
        raise
    log.info(
        "archive-extracted",
        archive=archive.name,
        kind=kind,
        entries=budget.entries,
        bytes=budget.written,
    )
    return budget.written
