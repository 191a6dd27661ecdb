"""Reading .zip members for ``pointercache.stage.archive``.

The central directory is read with ``zipfile`` and each member goes through the shared checks of
``archive_guard``; links, special files and encrypted entries are refused, and
``zipfile.extract*`` is never called.
"""

from __future__ import annotations

import stat
import zipfile
from typing import TYPE_CHECKING

from pointercache.errors import TooLarge, UnsafeArchive
from pointercache.stage.archive.guard import READ_ERRORS, Budget, Tree, reader, safe_parts

if TYPE_CHECKING:
    from pathlib import Path


def extract_zip(path: Path, tree: Tree, budget: Budget) -> None:
    """Write every member of the zip at ``path`` into ``tree``."""
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            if len(infos) > budget.limits.max_entries:
                raise TooLarge(f"archive has more than {budget.limits.max_entries} entries")
            for info in infos:
                _zip_member(zf, info, tree, budget)
    except (*READ_ERRORS, NotImplementedError) as exc:
        raise UnsafeArchive(f"{path.name}: not a readable zip archive: {exc}") from exc


def _zip_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, tree: Tree, budget: Budget) -> None:
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
    except (*READ_ERRORS, NotImplementedError, RuntimeError) as exc:
        raise UnsafeArchive(f"entry {name[:200]!r}: cannot be read: {exc}") from exc
    with src:
        tree.write(parts, reader(src, name), budget, info.file_size)
