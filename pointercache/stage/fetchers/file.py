"""``file:///path``: copy a local or mounted artifact (a single file or a directory tree).

Artifacts are regular files and directories only. A symlink, device, FIFO or socket anywhere
inside the tree is refused with ``ForbiddenURI`` (it could point outside the artifact's root), and
files are opened with ``O_NOFOLLOW`` so a file swapped for a link during the copy is refused too.
If the path itself resolves through a symlink, the resolved location must pass the allowlist as
well. Missing paths raise ``ArtifactNotFound``; more than ``max_bytes`` raises ``TooLarge``; a
full staging disk raises a ``FetchError`` naming the errno (``ENOSPC``), never an ``OSError``.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
from pathlib import Path

from pointercache.base.redact import redact_uri
from pointercache.errors import (
    ArtifactNotFound,
    ConfigError,
    FetchUnavailable,
    ForbiddenURI,
    TooLarge,
)
from pointercache.model.digest import FileHash
from pointercache.model.uris import file_path
from pointercache.stage.fetchers import FetchOptions, FetchResult
from pointercache.stage.fetchers.parts import local_io_error
from pointercache.volume.fsutil import remove_path

CHUNK = 1 << 20


class _Copier:
    """One copy: counts bytes against the limit and reports progress."""

    def __init__(self, uri: str, options: FetchOptions, total: int | None) -> None:
        self.name = redact_uri(uri)
        self.options = options
        self.total = total
        self.done = 0

    def refuse(self, rel: str, what: str) -> ForbiddenURI:
        return ForbiddenURI(
            f"{self.name}: {rel} is {what}; artifacts hold regular files and directories only"
        )

    def copy_file(self, src: Path, dst: Path, rel: str, digest: hashlib._Hash | None) -> None:
        try:
            # O_NONBLOCK: a FIFO swapped in after the check opens at once (and is refused below)
            fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            raise self.refuse(rel, "not a readable regular file") from exc
        with os.fdopen(fd, "rb") as fin:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise self.refuse(rel, "not a regular file")
            with dst.open("xb") as fout:
                while chunk := fin.read(CHUNK):
                    self.done += len(chunk)
                    if self.done > self.options.max_bytes:
                        raise TooLarge(f"{self.name}: over {self.options.max_bytes} bytes")
                    fout.write(chunk)
                    if digest is not None:
                        digest.update(chunk)
                    if self.options.progress is not None:
                        self.options.progress(self.done, self.total)

    def copy_tree(self, src: Path, dst: Path, rel: str, hashes: dict[bytes, FileHash]) -> None:
        dst.mkdir()
        with os.scandir(src) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                sub = f"{rel}/{entry.name}" if rel else entry.name
                if entry.is_symlink():
                    raise self.refuse(sub, "a symlink")
                if entry.is_dir(follow_symlinks=False):
                    self.copy_tree(Path(entry.path), dst / entry.name, sub, hashes)
                elif entry.is_file(follow_symlinks=False):
                    digest, before = hashlib.sha256(), self.done
                    self.copy_file(Path(entry.path), dst / entry.name, sub, digest)
                    hashes[os.fsencode(sub)] = FileHash(digest.hexdigest(), self.done - before)
                else:
                    raise self.refuse(sub, "a device, FIFO or socket")


class FileFetcher:
    """Copies ``file://`` artifacts into staging; implements ``Fetcher``."""

    def __init__(self, options: FetchOptions | None = None) -> None:
        self.options = options or FetchOptions()

    async def fetch(self, uri: str, dest: Path) -> FetchResult:
        """Copy the file or tree at ``uri`` to ``dest`` (removed again on any failure)."""
        self.options.allow.check(uri)
        try:
            src = file_path(uri)
        except ConfigError as exc:
            raise ForbiddenURI(str(exc)) from None
        if await asyncio.to_thread(os.path.lexists, dest):
            raise FileExistsError(f"fetch destination {dest} exists already")
        try:
            return await asyncio.to_thread(self._copy, uri, src, dest)
        except OSError as exc:  # the staging disk (ENOSPC...) or an unreadable source file
            await asyncio.to_thread(remove_path, dest, ignore_errors=True)
            shown = redact_uri(uri)
            raise local_io_error(exc) or FetchUnavailable(f"{shown}: {exc.strerror}") from exc
        except BaseException:
            await asyncio.to_thread(remove_path, dest, ignore_errors=True)
            raise

    def _copy(self, uri: str, src: Path, dest: Path) -> FetchResult:
        name = redact_uri(uri)
        try:
            real = src.resolve(strict=True)
            info = real.stat()
        except FileNotFoundError as exc:
            raise ArtifactNotFound(f"{name}: no such file or directory") from exc
        except OSError as exc:
            raise FetchUnavailable(f"{name}: cannot open ({exc.strerror})") from exc
        if real != src:
            self.options.allow.check(real.as_uri())
        if stat.S_ISREG(info.st_mode):
            copier = _Copier(uri, self.options, info.st_size)
            digest = hashlib.sha256()
            copier.copy_file(real, dest, real.name, digest)
            return FetchResult(is_dir=False, size_bytes=copier.done, sha256=digest.hexdigest())
        if stat.S_ISDIR(info.st_mode):
            copier = _Copier(uri, self.options, None)
            hashes: dict[bytes, FileHash] = {}
            try:
                copier.copy_tree(real, dest, "", hashes)
            except PermissionError as exc:
                raise FetchUnavailable(f"{name}: permission denied") from exc
            return FetchResult(is_dir=True, size_bytes=copier.done, files=hashes)
        raise ForbiddenURI(f"{name}: not a regular file or directory")

    async def aclose(self) -> None:
        """Nothing to release."""
