"""``mlflow-artifacts+http(s)://host:port/<path>``: artifacts behind MLflow's artifact proxy.

The MLflow source turns ``mlflow-artifacts:/<path>`` locations into this scheme. The fetcher lists
``GET /api/2.0/mlflow-artifacts/artifacts?path=<dir>`` recursively and downloads each file from
``GET /api/2.0/mlflow-artifacts/artifacts/<file>``, a few at a time, into ``dest``. An empty
listing means the path is a single file (or missing: ``ArtifactNotFound``).

Untrusted input: the URI passes the allowlist first; every listed name must be a plain relative
path (no ``..``, ``.``, empty or absolute segments, no backslashes or NULs) that stays inside
``dest``; files are created exclusively; the entry count, depth and total bytes are bounded.
Credentials (``FetchOptions.mlflow_auth``, netloc → token/basic-auth files) go only to the
netloc they are configured for, and never into a log line. Redirects are not followed. aiohttp is
imported when the first request is sent, not with this module.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, BinaryIO
from urllib.parse import quote, unquote, urlsplit

import orjson

from pointercache.adapters.http import (
    FETCH,
    Credentials,
    client_session,
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
from pointercache.stage.fetchers import FetchOptions, FetchResult

if TYPE_CHECKING:
    import aiohttp

ARTIFACTS_API = "/api/2.0/mlflow-artifacts/artifacts"
MAX_ENTRIES = 100_000
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
            self._session = client_session(timeout)
        return self._session

    async def fetch(self, uri: str, dest: Path) -> FetchResult:
        """List and download the artifact at ``uri`` into ``dest`` (which must not exist)."""
        self.options.allow.check(uri)
        shown = redact_uri(uri)
        parts = urlsplit(uri)
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
            if not (isinstance(exc, TimeoutError) or is_client_error(exc)):
                raise
            raise FetchUnavailable(f"{shown}: {type(exc).__name__}") from exc

    async def _fetch(self, base: str, root: PurePosixPath, dest: Path, shown: str) -> FetchResult:
        files: list[tuple[PurePosixPath, int | None]] = []
        await self._list(base, root, PurePosixPath(), files, shown)
        if not files:  # a single file, or nothing at all
            self._done, self._total = 0, None
            size, sha = await self._download_retrying(f"{base}/{quote(str(root))}", dest, shown)
            return FetchResult(is_dir=False, size_bytes=size, sha256=sha)
        total = sum(size or 0 for _, size in files)
        if total > self.options.max_bytes:
            raise TooLarge(f"{shown}: {total} bytes is over the {self.options.max_bytes} limit")
        await asyncio.to_thread(dest.mkdir, parents=False, exist_ok=False)
        limit = asyncio.Semaphore(PARALLEL)
        self._done, self._total = 0, total

        async def one(rel: PurePosixPath) -> tuple[bytes, FileHash]:
            target = dest.joinpath(*rel.parts)
            async with limit:
                await asyncio.to_thread(target.parent.mkdir, parents=True, exist_ok=True)
                url = f"{base}/{quote(str(root / rel))}"
                size, sha = await self._download_retrying(url, target, shown)
                return os.fsencode(str(rel)), FileHash(sha, size)

        try:
            async with asyncio.TaskGroup() as group:  # one failure cancels the other downloads
                tasks = [group.create_task(one(rel)) for rel, _ in files]
        except BaseExceptionGroup as failed:
            raise failed.exceptions[0] from None
        hashes = dict(task.result() for task in tasks)
        size = sum(h.size for h in hashes.values())
        return FetchResult(is_dir=True, size_bytes=size, files=hashes)

    async def _list(
        self,
        base: str,
        root: PurePosixPath,
        rel: PurePosixPath,
        out: list[tuple[PurePosixPath, int | None]],
        shown: str,
    ) -> None:
        if len(rel.parts) > MAX_DEPTH:
            raise TooLarge(f"{shown}: artifact tree deeper than {MAX_DEPTH}")
        params = {"path": str(root / rel)}
        async with self._client().get(
            base, params=params, headers=self._headers, allow_redirects=False
        ) as response:
            if response.status != 200:  # noqa: PLR2004
                raise status_error(response.status, f"{shown} (listing)", FETCH)
            body = await read_limited(response, MAX_LISTING_BYTES, shown, TooLarge)
        try:
            listing = orjson.loads(body or b"{}")
        except orjson.JSONDecodeError as exc:
            raise FetchUnavailable(f"{shown}: artifact listing is not JSON") from exc
        entries = listing.get("files") if isinstance(listing, dict) else None
        for entry in entries if isinstance(entries, list) else []:
            child = rel / safe_relpath(
                str(entry.get("path", "")) if isinstance(entry, dict) else ""
            )
            if len(out) >= MAX_ENTRIES:
                raise TooLarge(f"{shown}: more than {MAX_ENTRIES} artifact files")
            if entry.get("is_dir"):
                await self._list(base, root, child, out, shown)
            else:
                size = entry.get("file_size")
                out.append((child, size if isinstance(size, int) else None))

    async def _download_retrying(self, url: str, target: Path, shown: str) -> tuple[int, str]:
        """``_download`` with up to ``options.backoff.attempts`` attempts on transient failures."""
        async for attempt in aretrying(self.options.backoff):
            with attempt:
                try:
                    return await self._download(url, target, shown)
                except Exception as exc:
                    await asyncio.to_thread(target.unlink, missing_ok=True)
                    if isinstance(exc, TimeoutError) or is_client_error(exc):
                        raise FetchUnavailable(f"{shown}: {type(exc).__name__}") from exc
                    raise
        raise AssertionError("unreachable")  # pragma: no cover - aretrying re-raises

    async def _download(self, url: str, target: Path, shown: str) -> tuple[int, str]:
        """Stream one file into ``target`` (created exclusively); (bytes, sha256 hex)."""
        async with self._client().get(
            url, headers=self._headers, allow_redirects=False
        ) as response:
            if response.status != 200:  # noqa: PLR2004
                raise status_error(response.status, shown, FETCH)
            out = await asyncio.to_thread(_create, target)
            try:
                return await self._stream(response, out, shown)
            finally:
                out.close()

    async def _stream(
        self, response: aiohttp.ClientResponse, out: BinaryIO, shown: str
    ) -> tuple[int, str]:
        hasher, size = StreamHasher(), 0
        try:
            async for chunk in response.content.iter_chunked(CHUNK):
                size += len(chunk)
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


def _create(target: Path) -> BinaryIO:
    """Create ``target`` exclusively, never through a symlink."""
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    return os.fdopen(fd, "wb")
