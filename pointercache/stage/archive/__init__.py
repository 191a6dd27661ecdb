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

The checks and the descriptor-based writer live in ``archive_guard``, the format readers in
``archive_tar`` and ``archive_zip``; this module is the API the rest of pointercache uses.
"""

from __future__ import annotations

import os
import shutil
import stat
from typing import TYPE_CHECKING

from pointercache.base.log import log
from pointercache.errors import UnsafeArchive
from pointercache.stage.archive.guard import (
    MAX_COMPONENT_BYTES,
    MAX_DEPTH,
    MAX_NAME_BYTES,
    ArchiveLimits,
    Budget,
    Tree,
    safe_parts,
)
from pointercache.stage.archive.tar import MAX_HEADER_BYTES, extract_tar
from pointercache.stage.archive.zip import extract_zip

if TYPE_CHECKING:
    from pathlib import Path

    from pointercache.model.digest import FileHash

SUFFIXES = (".tar", ".tar.gz", ".tgz", ".zip")
"""File name endings recognised as archives."""


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


def extract(
    archive: Path,
    dest: Path,
    limits: ArchiveLimits | None = None,
    hashes: dict[bytes, FileHash] | None = None,
) -> int:
    """Extract ``archive`` into the new directory ``dest``; return the bytes written.

    Raises ``UnsafeArchive`` or ``TooLarge``; on any failure ``dest`` is left empty (or removed
    when this call created it), and nothing is ever written outside it. ``hashes``, if given,
    receives every extracted file's sha256 and size, computed while writing it (so the tree
    digest needs no second read, ``model.digest.listed_digest``). Nothing is fsynced: staging is
    made durable when it is installed.
    """
    limits = limits or ArchiveLimits()
    kind = archive_kind(archive)
    budget = Budget(limits, archive.stat().st_size)
    created = _prepare(dest)
    tree = Tree(dest)
    try:
        if kind == "zip":
            extract_zip(archive, tree, budget)
        else:
            extract_tar(archive, tree, budget, gz=kind == "tar.gz")
        tree.close()
        if hashes is not None:
            hashes.update(tree.hashes)
    except BaseException:
        tree.close()
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


__all__ = [
    "MAX_COMPONENT_BYTES",
    "MAX_DEPTH",
    "MAX_HEADER_BYTES",
    "MAX_NAME_BYTES",
    "SUFFIXES",
    "ArchiveLimits",
    "archive_kind",
    "extract",
    "is_archive",
    "safe_parts",
]
