"""S3 fetcher: one object, or every object under a prefix, with parallel ranged GETs.

``s3://bucket/key`` is a single object when that key exists; ``s3://bucket/prefix/`` (trailing
slash), an empty key, or a key that only exists as ``key/…`` is a directory: every object below
it is written at ``dest/<relpath>`` (zero-byte ``…/`` folder markers are skipped; a key whose
relative path is empty, absolute, or has ``.``/``..``/empty segments is refused as
``ForbiddenURI``).

``concurrency`` worker threads take the next job (an object, or a part of a large one) as they
become free, so the work in flight stays bounded however many objects a prefix holds. Objects
up to ``multipart_threshold`` are fetched with one GET and hashed while written. Larger
ones are preallocated and fetched as ``part_size`` ranges by ``concurrency`` threads, each part
written with ``os.pwrite`` (memory stays at a few chunk buffers per thread); the sha256 is
computed in order as parts complete, re-reading each finished part from the page cache, so no
extra pass is needed at the end. Every GET carries ``If-Match`` with the listed ETag, so an object
replaced mid-download fails instead of mixing versions. Each request is retried
``options.backoff.attempts`` times on transient errors (``adapters.retry``: exponential
backoff, full jitter). boto3 is
blocking, so all of it runs in this fetcher's thread pool. On any failure ``dest`` is removed.

Bounds: bodies are read a socket read at a time (``adapters.s3.read_some``) and counted by an
``adapters.pace`` meter per GET (the rate shared by ``concurrency`` threads), so a store that
trickles fails the fetch with ``Stalled``; each HEAD and each listing page must answer within
``connect_timeout + read_timeout + pace.window`` seconds per attempt; a prefix lists at most
``MAX_OBJECTS`` objects in ``MAX_PAGES`` pages. A failed or cancelled fetch waits at most
``DRAIN`` seconds for its threads.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import os
import shutil
import threading
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, TypeVar

from pointercache.adapters import s3
from pointercache.adapters.http import FETCH
from pointercache.adapters.retry import retrying
from pointercache.base.log import log
from pointercache.errors import (
    ArtifactNotFound,
    FetchUnavailable,
    ForbiddenURI,
    TooLarge,
)
from pointercache.model.digest import FileHash
from pointercache.stage.fetchers import FetchOptions, FetchResult
from pointercache.stage.fetchers.parts import (
    CHUNK,
    AbortedError,
    OrderedHasher,
    Transfer,
    expect_length,
    local_io_error,
    preallocate,
    run_jobs,
    split,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from pointercache.adapters.pace import Meter

T = TypeVar("T")
MiB = 1 << 20
MAX_OBJECTS = 100_000
"""Objects under one prefix, at most (a listing of more fails with ``TooLarge``)."""
MAX_PAGES = 1_000
"""Listing pages for one prefix, at most (a store that always says "truncated" is refused)."""
DRAIN = 1.0
"""Seconds a failed or cancelled fetch waits for its threads before leaving them behind."""


@dataclass(frozen=True, slots=True)
class _Object:
    key: str
    size: int
    etag: str | None


@dataclass(slots=True)
class _File:
    """One object to write at ``path``; its sha256 comes from one GET or from the part hasher."""

    path: Path
    obj: _Object
    whole_sha: str | None = None
    hasher: OrderedHasher | None = None

    def sha256(self) -> str | None:
        if self.hasher is not None:
            return self.hasher.hexdigest()
        return self.whole_sha


def relpath_of(prefix: str, key: str, uri: str) -> str | None:
    """Path of ``key`` relative to ``prefix``: None for folder markers, ForbiddenURI if unsafe."""
    rel = key[len(prefix) :]
    if rel == "" or rel.endswith("/"):
        return None
    parts = rel.split("/")
    if rel.startswith("/") or any(p in {"", ".", ".."} or "\0" in p for p in parts):
        raise ForbiddenURI(f"object key {key!r} under {uri} would escape the artifact directory")
    return str(PurePosixPath(*parts))


class S3Fetcher:
    """Fetches ``s3://`` objects and prefixes with boto3 (credentials from the standard chain)."""

    def __init__(
        self,
        options: FetchOptions,
        *,
        endpoint_url: str | None = None,
        part_size: int = 16 * MiB,
        multipart_threshold: int = 32 * MiB,
        concurrency: int = 8,
        list_page_size: int = 1000,
    ) -> None:
        self._options = options
        self._endpoint_url = endpoint_url
        self._part_size = part_size
        self._threshold = max(multipart_threshold, part_size)
        self._page_size = list_page_size
        self._pool = concurrent.futures.ThreadPoolExecutor(concurrency, "pointercache-s3")
        self._concurrency = concurrency
        self._client: Any = None

    async def fetch(self, uri: str, dest: Path) -> FetchResult:
        """Write the object (file) or prefix (directory) at ``dest``; FetchError on failure."""
        self._options.allow.check(uri)
        bucket, key = s3.parse_s3_uri(uri)
        try:
            return await self._fetch(uri, bucket, key, dest)
        except BaseException:
            await asyncio.to_thread(_remove, dest)
            raise

    async def aclose(self) -> None:
        """Close connections and the thread pool."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self._client is not None:
            self._client.close()
            self._client = None

    async def _fetch(self, uri: str, bucket: str, key: str, dest: Path) -> FetchResult:
        if self._client is None:
            self._client = await self._run(self._make_client)
        head = None
        if key and not key.endswith("/"):
            with contextlib.suppress(ArtifactNotFound):
                head = await self._bounded(uri, "HEAD", self._head, bucket, key)
        if head is not None:
            self._check_size(head.size, uri)
            files, named = [_File(dest, head)], []
        else:
            prefix = key if not key or key.endswith("/") else key + "/"
            objects = await self._list_all(uri, bucket, prefix)
            plan = [(rel, obj) for obj in objects if (rel := relpath_of(prefix, obj.key, uri))]
            if not plan:
                raise ArtifactNotFound(f"no object at {uri}")
            self._check_size(sum(obj.size for _, obj in plan), uri)
            await asyncio.to_thread(_make_dirs, dest, [rel for rel, _ in plan], uri)
            named = [(rel, _File(dest / rel, obj)) for rel, obj in plan]
            files = [f for _, f in named]
        total = sum(f.obj.size for f in files)
        transfer = Transfer(total, self._options.progress)
        jobs = self._jobs(bucket, files, transfer)  # lazy: made as workers free up
        await run_jobs(self._pool, jobs, transfer, self._concurrency, drain=DRAIN)
        if head is None:
            log.debug("s3-prefix-fetched", uri=uri, files=len(files), bytes=total)
            return FetchResult(is_dir=True, size_bytes=total, files=_hashes(named))
        return FetchResult(is_dir=False, size_bytes=total, sha256=files[0].sha256())

    def _check_size(self, size: int, uri: str) -> None:
        if size > self._options.max_bytes:
            raise TooLarge(f"{uri} is {size} bytes, over the {self._options.max_bytes} limit")

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, fn, *args)

    async def _bounded(self, uri: str, what: str, fn: Callable[..., T], *args: Any) -> T:
        """A small request with retries, answered within one request's bound each time
        (botocore reads a non-streaming answer whole, so a trickle is stopped from here)."""
        o = self._options
        limit = (o.connect_timeout + o.read_timeout + o.pace.window) * o.backoff.attempts
        limit += o.backoff.maximum * (o.backoff.attempts - 1)  # the waits between attempts
        try:
            async with asyncio.timeout(limit):
                return await self._run(self._retrying, uri, None, fn, *args)
        except TimeoutError:
            raise FetchUnavailable(f"{uri}: {what} not answered within {limit:g}s") from None

    async def _list_all(self, uri: str, bucket: str, prefix: str) -> list[_Object]:
        """Every object under ``prefix``, page by page (each page bounded like a HEAD)."""
        found: list[_Object] = []
        token: str | None = None
        for _ in range(MAX_PAGES):
            page, token = await self._bounded(
                uri, "listing", self._list_page, bucket, prefix, token
            )
            found.extend(page)
            if len(found) > MAX_OBJECTS:
                raise TooLarge(f"{uri}: more than {MAX_OBJECTS} objects under the prefix")
            if token is None:
                return found
        raise TooLarge(f"{uri}: more than {MAX_PAGES} listing pages under the prefix")

    def _make_client(self) -> Any:
        return s3.client(
            endpoint_url=self._endpoint_url,
            max_pool=self._concurrency + 2,
            connect_timeout=self._options.connect_timeout,
            read_timeout=self._options.read_timeout,
            max_attempts=1,
            lean_reads=True,
        )

    def _retrying(self, uri: str, transfer: Transfer | None, fn: Callable[..., T], *args: Any) -> T:
        """Call ``fn`` (blocking) with backoff on transient errors; raise translated errors.

        A wait between attempts ends early, with ``AbortedError``, once another job failed.
        """
        abort = transfer.abort if transfer is not None else threading.Event()

        def translated() -> T:
            try:
                return fn(*args)
            except AbortedError:
                raise
            except Exception as exc:
                raise local_io_error(exc) or s3.translate(exc, uri, FETCH) from exc

        def wait(seconds: float) -> None:
            if abort.wait(seconds):
                raise AbortedError("aborted")

        def note(exc: BaseException, seconds: float) -> None:
            log.info("s3-retry", uri=uri, delay_s=round(seconds, 2), error=exc)

        loop = retrying(
            self._options.backoff,
            sleep=wait,
            before_sleep=note,
            stop=lambda _attempt: abort.is_set(),
        )
        for attempt in loop:
            with attempt:
                return translated()
        raise AssertionError("unreachable")  # pragma: no cover - retrying re-raises

    def _head(self, bucket: str, key: str) -> _Object:
        response = self._client.head_object(Bucket=bucket, Key=key)
        return _Object(key, int(response["ContentLength"]), response.get("ETag"))

    def _list_page(
        self, bucket: str, prefix: str, token: str | None
    ) -> tuple[list[_Object], str | None]:
        """One ListObjectsV2 page: its objects and the continuation token (None at the end)."""
        kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": self._page_size}
        if token:
            kwargs["ContinuationToken"] = token
        page = self._client.list_objects_v2(**kwargs)
        objects = [
            _Object(item["Key"], int(item["Size"]), item.get("ETag"))
            for item in page.get("Contents", ())
        ]
        following = page.get("NextContinuationToken") if page.get("IsTruncated") else None
        return objects, str(following) if following else None

    def _jobs(self, bucket: str, files: list[_File], t: Transfer) -> Iterator[Callable[[], None]]:
        """One job per small object, one per part of a large one, made as workers ask for them
        (a large file is preallocated when its first part is taken)."""
        for f in files:
            uri = f"s3://{bucket}/{f.obj.key}"
            if f.obj.size <= self._threshold:
                yield partial(self._retrying, uri, t, self._get_whole, bucket, f, t)
                continue
            ranges = split(f.obj.size, self._part_size)
            preallocate(f.path, f.obj.size)
            f.hasher = OrderedHasher(f.path, ranges)
            for index, span in enumerate(ranges):
                yield partial(self._get_part, uri, bucket, f, (index, span), t)

    def _get(self, bucket: str, obj: _Object, byte_range: str | None) -> Any:
        kwargs: dict[str, Any] = {"Bucket": bucket, "Key": obj.key}
        if obj.etag:
            kwargs["IfMatch"] = obj.etag
        if byte_range:
            kwargs["Range"] = byte_range
        return self._client.get_object(**kwargs)["Body"]

    def _meter(self, bucket: str, key: str, size: int) -> Meter:
        return self._options.pace.meter(f"s3://{bucket}/{key}", size, share=self._concurrency)

    def _get_whole(self, bucket: str, f: _File, t: Transfer) -> None:
        """One GET streamed to the file, hashed while written."""
        sha, written, size = hashlib.sha256(), 0, f.obj.size
        try:
            with f.path.open("wb") as out:
                body = self._get(bucket, f.obj, None)
                meter = self._meter(bucket, f.obj.key, size)
                try:
                    while chunk := s3.read_some(body, CHUNK):
                        t.check()
                        meter.add(len(chunk))
                        written += len(chunk)
                        if written > size:
                            break
                        out.write(chunk)
                        sha.update(chunk)
                        t.add(len(chunk))
                finally:
                    body.close()
            expect_length(written, size, repr(f.obj.key))
        except BaseException:
            t.add(-min(written, size))
            raise
        f.whole_sha = sha.hexdigest()

    def _get_part(
        self, uri: str, bucket: str, f: _File, part: tuple[int, tuple[int, int]], t: Transfer
    ) -> None:
        """One part of a large object, with retries; then let the hasher advance."""
        index, span = part
        self._retrying(uri, t, self._get_range, bucket, f, span, t)
        assert f.hasher is not None
        f.hasher.completed(index)

    def _get_range(self, bucket: str, f: _File, span: tuple[int, int], t: Transfer) -> None:
        """One ranged GET written with pwrite at its offset."""
        start, end = span
        offset = start
        fd = os.open(f.path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            body = self._get(bucket, f.obj, f"bytes={start}-{end - 1}")
            meter = self._meter(bucket, f.obj.key, end - start)
            try:
                while offset < end and (chunk := s3.read_some(body, min(CHUNK, end - offset))):
                    t.check()
                    meter.add(len(chunk))
                    os.pwrite(fd, chunk, offset)
                    offset += len(chunk)
                    t.add(len(chunk))
            finally:
                body.close()
            expect_length(offset, end, repr(f.obj.key))
        except BaseException:
            t.add(start - offset)
            raise
        finally:
            os.close(fd)


def _hashes(named: list[tuple[str, _File]]) -> dict[bytes, FileHash] | None:
    """Each written file's hash and size, keyed as ``model.digest`` wants; None if one lacks it."""
    hashes = {}
    for rel, f in named:
        sha = f.sha256()
        if sha is None:  # pragma: no cover - every job records its hash before it returns
            return None
        hashes[os.fsencode(rel)] = FileHash(sha, f.obj.size)
    return hashes


def _make_dirs(dest: Path, rels: list[str], uri: str) -> None:
    dest.mkdir()
    files = set(rels)
    for rel in rels:
        for parent in PurePosixPath(rel).parents:
            if str(parent) in files:
                raise ForbiddenURI(f"{uri}: {parent} is both an object and a prefix")
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
