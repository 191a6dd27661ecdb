"""HTTP(S) fetcher (aiohttp): streamed to disk, hashed while written, resumed with Range.

Redirects are followed by hand, at most ``max_redirects`` hops, and every hop is checked by
``options.allow`` before a request is sent to it (a registry cannot bounce us to a metadata
address). A broken body is resumed with ``Range: bytes=N-`` guarded by ``If-Range`` (the strong
ETag, else Last-Modified); a server that ignores the range (200) or has no validator makes the
download restart from zero. An answer is used only for the bytes its status and headers prove it
holds (``adapters.http.body_range``): a 206 for another range, a 200 with a ``Content-Range``, a
size that changed under the same strong ETag all start the download over, so a published file is
never shorter or shifted. Each failed attempt that made no progress uses one of
``options.backoff.attempts`` attempts. Every chunk is counted by an ``adapters.pace`` meter: a
server that trickles fails the fetch with ``Stalled`` after one window (it is not asked again in
this fetch), and the whole fetch is capped by the size it declared. Bodies are taken as served
(``Accept-Encoding: identity``, no decompression) and bounded by ``options.max_bytes`` both by
Content-Length and by bytes actually received. Disk writes and hashing run in two worker
threads, pipelined with the socket reads. URLs are logged and put in errors only through
``redact_uri`` (presigned URLs carry credentials in their query strings). On any failure ``dest``
is removed. aiohttp is imported (by ``adapters.http``) when the first request is sent, not with
this module (start-up stays light).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO
from urllib.parse import urljoin

from pointercache.adapters.http import (
    FETCH,
    RangeMismatch,
    body_range,
    client_session,
    exact_url,
    network_errors,
    status_error,
    transfer_timeout,
)
from pointercache.adapters.retry import aretrying
from pointercache.base.log import log
from pointercache.base.redact import redact_uri
from pointercache.errors import (
    FetchError,
    FetchUnavailable,
    ForbiddenURI,
    Stalled,
    TooLarge,
)
from pointercache.model.uris import canonical_uri
from pointercache.stage.allow import check_redirect, split_uri
from pointercache.stage.fetchers import FetchOptions, FetchResult, Progress
from pointercache.stage.fetchers.parts import local_io_error

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from pathlib import Path

    import aiohttp

    from pointercache.adapters.pace import Meter

CHUNK = 1 << 20
WRITE_SLICE = 64 << 10
"""Bytes per write(2): small enough to stay cheap to copy into the page cache."""
REDIRECTS = frozenset({301, 302, 303, 307, 308})


class _Sink:
    """The destination file with its running sha256 (used from one worker thread at a time)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file: BinaryIO = path.open("wb", buffering=0)
        self.sha = hashlib.sha256()
        self.size = 0  # bytes accepted so far (updated on the event loop, before writing)

    def write(self, pieces: list[bytes]) -> None:
        """Write the pieces as they came off the socket (no joining copy).

        Writes go out in WRITE_SLICE pieces: copying 64 KiB at a time into the page cache was
        about five times cheaper per GiB than multi-MiB writes on the machines we measured.
        """
        for piece in pieces:
            view = memoryview(piece)
            while view:
                view = view[self.file.write(view[:WRITE_SLICE]) or 0 :]

    def hash(self, pieces: list[bytes]) -> None:
        """Hash the pieces in order (runs in its own thread, beside the writes)."""
        for piece in pieces:
            self.sha.update(piece)

    def restart(self) -> None:
        self.file.seek(0)
        self.file.truncate()
        self.sha = hashlib.sha256()
        self.size = 0

    def close(self) -> None:
        self.file.close()


@dataclass(slots=True)
class _State:
    """What the server told us about the resource, for resuming it."""

    total: int | None = None
    validator: str | None = None
    etag: str | None = None
    """The strong ETag of the first full answer (the same ETag must mean the same bytes)."""


class HttpFetcher:
    """Fetches ``http://`` and ``https://`` artifacts as a single file."""

    def __init__(self, options: FetchOptions, *, max_redirects: int = 5) -> None:
        self._options = options
        self._max_redirects = max_redirects
        self._session: aiohttp.ClientSession | None = None

    async def fetch(self, uri: str, dest: Path) -> FetchResult:
        """Download ``uri`` to the file ``dest``; FetchError (never an aiohttp error) on failure.

        A raw space or non-ASCII character in the path is percent-encoded first
        (``model.uris.canonical_uri``); existing escapes are sent exactly as written.
        """
        if split_uri(uri).scheme.lower() not in {"http", "https"}:
            raise ForbiddenURI(f"not an HTTP URI: {redact_uri(uri)}")
        uri = canonical_uri(uri)
        await asyncio.to_thread(self._options.allow.check, uri)  # may resolve DNS
        try:
            sink = await asyncio.to_thread(_Sink, dest)
        except OSError as exc:
            raise local_io_error(exc) or FetchError(f"cannot create {dest.name}") from exc
        meter = self._options.pace.meter(redact_uri(uri))
        try:
            state = await self._transfer(uri, sink, meter)
        except OSError as exc:  # network errors were translated already: this is the disk
            await asyncio.to_thread(_discard, sink)
            raise local_io_error(exc) or FetchError("cannot write the staging file") from exc
        except BaseException:
            await asyncio.to_thread(_discard, sink)
            raise
        await asyncio.to_thread(sink.close)
        log.debug("http-fetched", uri=redact_uri(uri), bytes=sink.size, total=state.total)
        return FetchResult(is_dir=False, size_bytes=sink.size, sha256=sink.sha.hexdigest())

    async def aclose(self) -> None:
        """Close the connection pool."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            timeout = transfer_timeout(self._options.connect_timeout, self._options.read_timeout)
            self._session = client_session(timeout, auto_decompress=False, read_bufsize=4 * CHUNK)
        return self._session

    async def _transfer(self, uri: str, sink: _Sink, meter: Meter) -> _State:
        """Attempts until the body is complete; an attempt that made progress resumes at once
        with a fresh ``options.backoff`` (attempts and waits count failures without progress).
        ``Stalled`` is never retried here (see ``adapters.retry.is_transient``)."""
        state = _State()
        shown = redact_uri(uri)

        def note(exc: BaseException, seconds: float) -> None:
            log.info("http-retry", uri=shown, at=sink.size, delay_s=round(seconds, 2), error=exc)

        while True:
            mark = sink.size
            try:
                loop = aretrying(
                    self._options.backoff,
                    before_sleep=note,
                    stop=_progressed(sink, mark),
                )
                async for attempt in loop:
                    with attempt:
                        await self._attempt(uri, sink, state, meter)
            except Stalled:
                raise
            except FetchUnavailable as exc:
                if sink.size <= mark:
                    raise
                log.info("http-retry", uri=shown, at=sink.size, delay_s=0, error=exc)
            else:
                return state

    async def _attempt(self, uri: str, sink: _Sink, state: _State, meter: Meter) -> None:
        headers = {"Accept-Encoding": "identity"}
        asked_from = 0
        if sink.size and state.validator:
            asked_from = sink.size
            headers["Range"] = f"bytes={asked_from}-"
            headers["If-Range"] = state.validator
        elif sink.size:
            await asyncio.to_thread(sink.restart)  # nothing to guard a resume with
        async with self._open(uri, headers) as resp:
            self._accept(resp, sink, state, redact_uri(uri), asked_from)
            meter.expect(state.total)
            meter.restart_window()  # reconnecting and waiting for headers is not a trickle
            await self._stream(resp, sink, state, redact_uri(uri), meter)

    @contextlib.asynccontextmanager
    async def _open(
        self, uri: str, headers: dict[str, str]
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """GET ``uri``, following at most ``max_redirects`` hops, each re-checked by the policy."""
        url = uri
        for _ in range(self._max_redirects + 1):
            try:
                # encoded=True: send the URL byte for byte (presigned signatures break if
                # their percent-encoding is normalized)
                resp = await self._client().get(
                    exact_url(url), headers=headers, allow_redirects=False
                )
            except network_errors() as exc:
                raise FetchUnavailable(f"{redact_uri(url)}: {type(exc).__name__}") from exc
            if resp.status not in REDIRECTS:
                try:
                    yield resp
                except BaseException:
                    resp.close()  # the connection is in an unknown state: never reuse it
                    raise
                resp.release()
                return
            location = resp.headers.get("Location", "")
            resp.close()
            url = await self._next_hop(url, location)
        raise FetchError(f"more than {self._max_redirects} redirects from {redact_uri(uri)}")

    async def _next_hop(self, url: str, location: str) -> str:
        """The absolute target of a redirect, checked like a first request (off the loop: DNS)."""
        if not location:
            raise FetchError(f"redirect without Location from {redact_uri(url)}")
        try:
            joined = urljoin(url, location)
        except ValueError:
            raise ForbiddenURI(f"unparseable redirect from {redact_uri(url)}") from None
        if split_uri(joined).scheme.lower() not in {"http", "https"}:
            raise ForbiddenURI(f"redirect to a non-HTTP URI from {redact_uri(url)}")
        target = await asyncio.to_thread(
            check_redirect, self._options.allow, url, canonical_uri(location)
        )
        log.info("http-redirect", uri=redact_uri(url), to=redact_uri(target))
        return target

    def _accept(
        self,
        resp: aiohttp.ClientResponse,
        sink: _Sink,
        state: _State,
        shown: str,
        asked_from: int,
    ) -> None:
        """Check status and headers; continue (206) or start over (200), or refuse the answer.

        An answer whose headers do not prove which bytes it holds empties the file and fails
        the attempt (``FetchUnavailable``): the next one starts from byte 0.
        """
        if resp.status not in (200, 206):
            if resp.status == 416:  # noqa: PLR2004 - our range is stale: start over
                sink.restart()
            raise status_error(resp.status, shown, FETCH)
        try:
            body = body_range(
                resp.status, resp.headers, asked_from=asked_from, known_total=state.total
            )
            if body.start == 0:
                self._whole(resp, body.total, state)
        except RangeMismatch as exc:
            log.info("http-restart", uri=shown, discarded=sink.size, reason=str(exc))
            sink.restart()  # what was known about the resource stays: a later answer must agree
            raise FetchUnavailable(f"{shown}: {exc}; starting over") from exc
        if body.start == 0 and sink.size:
            log.info("http-restart", uri=shown, discarded=sink.size)
            sink.restart()
        state.total = body.total
        if state.total is not None and state.total > self._options.max_bytes:
            raise TooLarge(f"{shown} is {state.total} bytes, over {self._options.max_bytes}")

    @staticmethod
    def _whole(resp: aiohttp.ClientResponse, total: int | None, state: _State) -> None:
        """Take the validators of a whole answer; the same strong ETag with another size is a
        contradiction (a strong validator changes with the bytes, RFC 9110 §8.8.1)."""
        etag = resp.headers.get("ETag", "")
        strong = etag if etag and not etag.startswith("W/") else None
        known = None not in (total, state.total)
        if strong and strong == state.etag and known and total != state.total:
            raise RangeMismatch(f"{total} bytes under ETag {strong}, {state.total} before")
        state.etag = strong
        state.validator = strong or resp.headers.get("Last-Modified")

    async def _stream(
        self, resp: aiohttp.ClientResponse, sink: _Sink, state: _State, shown: str, meter: Meter
    ) -> None:
        """Copy the body to the sink, within the size limit and the pace; keep what came
        before a break or a stall."""
        pipe = _Pipeline(sink, state, self._options.progress)
        limit = self._options.max_bytes
        try:
            async for data, _ in resp.content.iter_chunks():
                if sink.size + pipe.buffered + len(data) > limit:
                    raise TooLarge(f"{shown} sent more than {limit} bytes")
                await pipe.feed(data)
                meter.add(len(data))
        except Stalled:
            await pipe.flush()
            raise
        except network_errors() as exc:
            await pipe.flush()  # keep what arrived before the break: a resume continues after it
            raise FetchUnavailable(f"{shown}: body broke: {type(exc).__name__}") from exc
        else:
            await pipe.flush()
        finally:
            await pipe.wait()  # TooLarge or cancelled: no write may outlive the sink
        if state.total is not None and sink.size != state.total:
            raise FetchUnavailable(f"{shown}: body ended at {sink.size} of {state.total} bytes")


class _Pipeline:
    """Gathers the body's pieces into CHUNK-sized batches that one writer thread writes and
    hashes in order, up to DEPTH batches behind the socket: a slow disk write does not stall
    the download at once, and memory stays at DEPTH + 1 chunks."""

    DEPTH = 4

    def __init__(self, sink: _Sink, state: _State, progress: Progress | None) -> None:
        self.sink, self.state, self.progress = sink, state, progress
        self.buf: list[bytes] = []
        self.buffered = 0
        self._pending: collections.deque[asyncio.Future[tuple[None, None]]] = collections.deque()
        # One thread writes and one hashes, each in arrival order: both release the GIL.
        self._writer = concurrent.futures.ThreadPoolExecutor(1, "pointercache-http-writer")
        self._hasher = concurrent.futures.ThreadPoolExecutor(1, "pointercache-http-hasher")

    async def feed(self, data: bytes) -> None:
        self.buf.append(data)
        self.buffered += len(data)
        if self.buffered >= CHUNK:
            while len(self._pending) >= self.DEPTH:
                await self._pending.popleft()
            self._submit()
        elif self.progress is not None:  # a slow body still shows its progress
            self.progress(self.sink.size + self.buffered, self.state.total)

    async def flush(self) -> None:
        if self.buffered:
            self._submit()
        await self.wait()

    async def wait(self) -> None:
        """Wait until every submitted batch is written (also after an error)."""
        try:
            while self._pending:
                await self._pending.popleft()
        finally:
            self._writer.shutdown(wait=True, cancel_futures=False)
            self._hasher.shutdown(wait=True, cancel_futures=False)

    def _submit(self) -> None:
        self.sink.size += self.buffered
        data, self.buf, self.buffered = self.buf, [], 0
        loop = asyncio.get_running_loop()
        self._pending.append(
            asyncio.gather(
                loop.run_in_executor(self._writer, self.sink.write, data),
                loop.run_in_executor(self._hasher, self.sink.hash, data),
            )
        )
        if self.progress is not None:
            self.progress(self.sink.size, self.state.total)


def _progressed(sink: _Sink, mark: int) -> Callable[[int], bool]:
    """A retry ``stop``: end this stretch of attempts once bytes arrived past ``mark``."""
    return lambda _attempt: sink.size > mark


def _discard(sink: _Sink) -> None:
    sink.close()
    sink.path.unlink(missing_ok=True)
