"""``mlflow-artifacts+http(s)://host:port/<path>``: artifacts behind MLflow's artifact proxy.

The MLflow source turns ``mlflow-artifacts:/<path>`` locations into this scheme. The fetcher lists
``GET /api/2.0/mlflow-artifacts/artifacts?path=<dir>`` recursively and downloads each file from
``GET /api/2.0/mlflow-artifacts/artifacts/<file>``, a few at a time, into ``dest``. An empty
listing means the path is a single file (or missing: ``ArtifactNotFound``).

Untrusted input: the URI passes the allowlist first, and connections go only to addresses
``options.allow.peers`` checked (no DNS rebinding between check and connect); every listed name must
be a plain relative path (no ``..``, ``.``, empty or absolute segments, no backslashes or NULs) that
stays inside ``dest``, listed once, and never both a file and a directory (``ForbiddenURI``
otherwise, before any file is written); files are created exclusively. The fan-out is bounded: at
most ``MAX_LISTINGS`` directory listings and ``MAX_ENTRIES`` entries per artifact, ``MAX_DEPTH``
levels, each listing answered within ``connect_timeout + read_timeout`` seconds in all, and the
total bytes within ``max_bytes``. Each file's body is counted by an ``adapters.pace`` meter (the
rate shared by the ``PARALLEL`` downloads): a proxy that trickles fails the fetch with ``Stalled``.
Credentials (``FetchOptions.mlflow_auth``, netloc → token/basic-auth files) go only to the
netloc they are configured for, and never into a log line. Redirects are not followed. aiohttp is
imported when the first request is sent, not with this module.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, BinaryIO
from urllib.parse import quote, unquote

import orjson

from pointercache.adapters.http import (
    FETCH,
    Credentials,
    client_session,
    client_timeout,
    is_client_error,
    read_limited,
    status_error,
    transfer_timeout,
)
from pointercache.adapters.retry import aretrying
from pointercache.base.redact import redact_uri
from pointercache.errors import (
    FetchUnavailable,
    ForbiddenURI,
    PointercacheError,
    TooLarge,
)
from pointercache.model.digest import FileHash, StreamHasher
from pointercache.stage.allow import split_uri
from pointercache.stage.fetchers import FetchOptions, FetchResult
from pointercache.volume.fsutil import remove_path

if TYPE_CHECKING:
    import aiohttp

    from pointercache.adapters.pace import Meter

ARTIFACTS_API = "/api/2.0/mlflow-artifacts/artifacts"
MAX_ENTRIES = 100_000
"""Files and directories listed for one artifact, at most."""
MAX_LISTINGS = 2_000
"""Directory listings (one request each) for one artifact, at most."""
MAX_DEPTH = 32
MAX_LISTING_BYTES = 16 << 20
PARALLEL = 4
CHUNK = 1 << 20


def safe_relpath(path: str) -> PurePosixPath:
    """Validate a relative artifact path from the server; ``ForbiddenURI`` if it could escape."""
    if not path or "\\" in path or "\x00" in path or path.startswith("/"):
        raise ForbiddenURI(f"unsafe artifact path {path!r}")
    segments = path.split("/")
    if any(seg in ("", ".", "..") for seg in segments):
        raise ForbiddenURI(f"unsafe artifact path {path!r}")
    return PurePosixPath(*segments)


class MlflowArtifactFetcher:
    """Fetches a file or directory through an MLflow tracking server's artifact proxy."""

    def __init__(self, options: FetchOptions) -> None:
        self.options = options
        self._session: aiohttp.ClientSession | None = None
        self._headers: dict[str, str] = {}
        self._done = 0
        self._total: int | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            timeout = transfer_timeout(self.options.connect_timeout, self.options.read_timeout)
            self._session = client_session(timeout, peers=self.options.allow.peers)
        return self._session

    async def fetch(self, uri: str, dest: Path) -> FetchResult:
        """List and download the artifact at ``uri`` into ``dest`` (which must not exist)."""
        self.options.allow.check(uri)
        shown = redact_uri(uri)
        parts = split_uri(uri)
        scheme = parts.scheme.lower()
        if scheme not in ("mlflow-artifacts+http", "mlflow-artifacts+https") or not parts.netloc:
            raise ForbiddenURI(f"not an MLflow artifact proxy URI: {shown}")
        if "@" in parts.netloc or parts.query or parts.fragment:
            raise ForbiddenURI(f"user info, query or fragment in {shown}")
        root = safe_relpath(unquote(parts.path).strip("/"))
        base = f"{scheme.removeprefix('mlflow-artifacts+')}://{parts.netloc}{ARTIFACTS_API}"
        credentials = self.options.mlflow_auth.get(parts.netloc, Credentials())
        try:
            self._headers = credentials.headers()
        except PointercacheError as exc:
            raise FetchUnavailable(f"{shown}: {exc}") from exc
        try:
            return await self._fetch(base, root, dest, shown)
        except Exception as exc:
            await asyncio.to_thread(remove_path, dest, ignore_errors=True)
            if not (isinstance(exc, TimeoutError) or is_client_error(exc)):
                raise
            raise FetchUnavailable(f"{shown}: {type(exc).__name__}") from exc
        except BaseException:  # cancelled: nothing may stay behind either
            await asyncio.to_thread(remove_path, dest, ignore_errors=True)
            raise

    async def _fetch(self, base: str, root: PurePosixPath, dest: Path, shown: str) -> FetchResult:
        tree = _Tree(shown)
        await self._list(base, root, PurePosixPath(), tree)
        files = tree.checked()
        if not files:  # a single file, or nothing at all
            self._done, self._total = 0, None
            size, sha = await self._download_retrying(
                f"{base}/{quote(str(root))}", dest, shown, None
            )
            return FetchResult(is_dir=False, size_bytes=size, sha256=sha)
        total = sum(size or 0 for size in files.values())
        if total > self.options.max_bytes:
            raise TooLarge(f"{shown}: {total} bytes is over the {self.options.max_bytes} limit")
        await asyncio.to_thread(dest.mkdir, parents=False, exist_ok=False)
        limit = asyncio.Semaphore(PARALLEL)
        self._done, self._total = 0, total

        async def one(rel: PurePosixPath, expected: int | None) -> tuple[bytes, FileHash]:
            target = dest.joinpath(*rel.parts)
            async with limit:
                await asyncio.to_thread(target.parent.mkdir, parents=True, exist_ok=True)
                url = f"{base}/{quote(str(root / rel))}"
                size, sha = await self._download_retrying(url, target, shown, expected)
                return os.fsencode(str(rel)), FileHash(sha, size)

        try:
            async with asyncio.TaskGroup() as group:  # one failure cancels the other downloads
                tasks = [group.create_task(one(rel, size)) for rel, size in files.items()]
        except BaseExceptionGroup as failed:
            raise failed.exceptions[0] from None
        hashes = dict(task.result() for task in tasks)
        size = sum(h.size for h in hashes.values())
        return FetchResult(is_dir=True, size_bytes=size, files=hashes)

    async def _list(self, base: str, root: PurePosixPath, rel: PurePosixPath, tree: _Tree) -> None:
        if len(rel.parts) > MAX_DEPTH:
            raise TooLarge(f"{tree.shown}: artifact tree deeper than {MAX_DEPTH}")
        tree.listing()
        params = {"path": str(root / rel)}
        within = client_timeout(self.options.connect_timeout + self.options.read_timeout)
        async with self._client().get(
            base, params=params, headers=self._headers, allow_redirects=False, timeout=within
        ) as response:
            if response.status != 200:  # noqa: PLR2004
                raise status_error(response.status, f"{tree.shown} (listing)", FETCH)
            body = await read_limited(response, MAX_LISTING_BYTES, tree.shown, TooLarge)
        try:
            listing = orjson.loads(body or b"{}")
        except orjson.JSONDecodeError as exc:
            raise FetchUnavailable(f"{tree.shown}: artifact listing is not JSON") from exc
        entries = listing.get("files") if isinstance(listing, dict) else None
        subdirs: list[PurePosixPath] = []
        for entry in entries if isinstance(entries, list) else []:
            path = str(entry.get("path", "")) if isinstance(entry, dict) else ""
            child = rel / safe_relpath(path)
            if isinstance(entry, dict) and entry.get("is_dir"):
                tree.add_dir(child)
                subdirs.append(child)
            else:
                size = entry.get("file_size") if isinstance(entry, dict) else None
                tree.add_file(child, size if isinstance(size, int) and size >= 0 else None)
        for child in subdirs:
            await self._list(base, root, child, tree)

    async def _download_retrying(
        self, url: str, target: Path, shown: str, expected: int | None
    ) -> tuple[int, str]:
        """``_download`` with up to ``options.backoff.attempts`` attempts on transient failures
        (not on ``Stalled``: see ``adapters.retry.is_transient``)."""
        async for attempt in aretrying(self.options.backoff):
            with attempt:
                try:
                    return await self._download(url, target, shown, expected)
                except Exception as exc:
                    await asyncio.to_thread(target.unlink, missing_ok=True)
                    if isinstance(exc, TimeoutError) or is_client_error(exc):
                        raise FetchUnavailable(f"{shown}: {type(exc).__name__}") from exc
                    raise
        raise AssertionError("unreachable")  # pragma: no cover - aretrying re-raises

    async def _download(
        self, url: str, target: Path, shown: str, expected: int | None
    ) -> tuple[int, str]:
        """Stream one file into ``target`` (created exclusively); (bytes, sha256 hex)."""
        async with self._client().get(
            url, headers=self._headers, allow_redirects=False
        ) as response:
            if response.status != 200:  # noqa: PLR2004
                raise status_error(response.status, shown, FETCH)
            size = response.content_length if response.content_length is not None else expected
            meter = self.options.pace.meter(f"{shown} ({target.name})", size, share=PARALLEL)
            out = await asyncio.to_thread(_create, target)
            try:
                return await self._stream(response, out, shown, meter)
            finally:
                out.close()

    async def _stream(
        self, response: aiohttp.ClientResponse, out: BinaryIO, shown: str, meter: Meter
    ) -> tuple[int, str]:
        hasher, size = StreamHasher(), 0
        try:
            async for chunk in response.content.iter_chunked(CHUNK):
                size += len(chunk)
                meter.add(len(chunk))
                self._progress(len(chunk), shown)
                hasher.update(chunk)
                await asyncio.to_thread(out.write, chunk)
            await asyncio.to_thread(out.flush)
        except BaseException:
            self._done -= size  # a retry counts these bytes again
            raise
        return size, hasher.hexdigest()

    def _progress(self, count: int, shown: str) -> None:
        self._done += count
        if self._done > self.options.max_bytes:
            raise TooLarge(f"{shown}: over the {self.options.max_bytes} limit")
        if self.options.progress is not None:
            self.options.progress(self._done, self._total)

    async def aclose(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None


class _Tree:
    """What the listings named so far: each path once, never both a file and a directory."""

    def __init__(self, shown: str) -> None:
        self.shown = shown
        self.files: dict[PurePosixPath, int | None] = {}
        self.dirs: set[PurePosixPath] = set()
        self.listings = 0

    def listing(self) -> None:
        """Count one more directory listing; ``TooLarge`` past ``MAX_LISTINGS``."""
        self.listings += 1
        if self.listings > MAX_LISTINGS:
            raise TooLarge(f"{self.shown}: more than {MAX_LISTINGS} artifact directories")

    def add_file(self, path: PurePosixPath, size: int | None) -> None:
        """Record a listed file; ``ForbiddenURI`` if the name is taken, ``TooLarge`` if too many."""
        self._claim(path)
        self.files[path] = size

    def add_dir(self, path: PurePosixPath) -> None:
        """Record a listed directory (same rules as ``add_file``)."""
        self._claim(path)
        self.dirs.add(path)

    def _claim(self, path: PurePosixPath) -> None:
        if path in self.files or path in self.dirs:
            kind = "a file" if path in self.files else "a directory"
            raise ForbiddenURI(f"{self.shown}: {str(path)!r} is listed twice (already {kind})")
        if len(self.files) + len(self.dirs) >= MAX_ENTRIES:
            raise TooLarge(f"{self.shown}: more than {MAX_ENTRIES} artifact entries")

    def checked(self) -> dict[PurePosixPath, int | None]:
        """The files, once no file is also the parent of another listed path."""
        for path in [*self.files, *self.dirs]:
            for parent in path.parents:
                if parent in self.files:
                    raise ForbiddenURI(
                        f"{self.shown}: {str(parent)!r} is listed as a file and as a directory"
                    )
        return self.files


def _create(target: Path) -> BinaryIO:
    """Create ``target`` exclusively, never through a symlink."""
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    return os.fdopen(fd, "wb")
