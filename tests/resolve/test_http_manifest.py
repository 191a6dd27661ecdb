"""HTTP(S) manifest source: conditional GETs, limits, timeouts and status mapping."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import orjson
import pytest
from aiohttp import web

from pointercache.errors import InvalidManifest, NotFound, SourceError, SourceUnavailable
from pointercache.model.candidate import Selector
from pointercache.resolve.sources import SourceOptions, open_source
from pointercache.resolve.sources.http import HttpManifestSource

PROD = Selector.parse("alias:production")


def manifest(revision: int, production: str = "8") -> bytes:
    """A valid manifest for model 'rec' whose production alias names ``production``."""
    digest = "sha256:" + hashlib.sha256(production.encode()).hexdigest()
    return orjson.dumps(
        {
            "schema": 1,
            "model": "rec",
            "revision": revision,
            "aliases": {"production": production},
            "versions": {production: {"uri": f"s3://models/rec/{production}/", "digest": digest}},
        }
    )


@dataclass
class ManifestServer:
    """Serves one manifest with ETag/Last-Modified validators; counts requests and bytes."""

    body: bytes = b""
    etag: str = '"1"'
    last_modified: str = "Sun, 22 Nov 2026 10:00:00 GMT"
    use_etag: bool = True
    status: int = 200
    requests: int = 0
    body_bytes: int = 0
    not_modified: int = 0
    headers_seen: list[dict[str, str]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        self.headers_seen.append(dict(request.headers))
        if self.status != 200:
            return web.Response(status=self.status)
        validators = {"Last-Modified": self.last_modified}
        if self.use_etag:
            validators["ETag"] = self.etag
        matches = (
            request.headers.get("If-None-Match") == self.etag
            if self.use_etag
            else request.headers.get("If-Modified-Since") == self.last_modified
        )
        if matches:
            self.not_modified += 1
            return web.Response(status=304, headers=validators)
        self.body_bytes += len(self.body)
        return web.Response(body=self.body, headers=validators, content_type="application/json")


@pytest.fixture
async def manifest_server() -> AsyncIterator[tuple[ManifestServer, str]]:
    """A ManifestServer on a loopback port and the manifest's URL."""
    state = ManifestServer(body=manifest(1))
    app = web.Application()
    app.router.add_get("/rec.json", state.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield state, f"http://127.0.0.1:{port}/rec.json"
    finally:
        await runner.cleanup()


async def test_steady_state_poll_is_a_304_without_body(
    manifest_server: tuple[ManifestServer, str],
) -> None:
    """After the first GET, unchanged polls are 304s that send no body and reuse the manifest."""
    state, url = manifest_server
    source = open_source(url, SourceOptions(timeout=5))
    assert isinstance(source, HttpManifestSource)
    try:
        first = await source.resolve("rec", PROD)
        for _ in range(10):
            again = await source.resolve("rec", PROD)
            assert again == first
    finally:
        await source.aclose()
    assert state.requests == 11
    assert state.not_modified == 10
    assert state.body_bytes == len(state.body)
    assert source.not_modified == 10
    assert state.headers_seen[-1]["If-None-Match"] == '"1"'


async def test_invalidate_sends_an_unconditional_no_cache_get(
    manifest_server: tuple[ManifestServer, str],
) -> None:
    """After invalidate() (a forced refresh) one GET skips the validators and asks for no-cache."""
    state, url = manifest_server
    source = HttpManifestSource(url, SourceOptions(timeout=5))
    try:
        await source.resolve("rec", PROD)
        await source.resolve("rec", PROD)
        source.invalidate()
        await source.resolve("rec", PROD)
        await source.resolve("rec", PROD)
    finally:
        await source.aclose()
    assert state.not_modified == 2
    forced = state.headers_seen[2]
    assert "If-None-Match" not in forced
    assert forced["Cache-Control"] == "no-cache"
    assert state.headers_seen[3]["If-None-Match"] == '"1"'


async def test_change_is_picked_up(manifest_server: tuple[ManifestServer, str]) -> None:
    """A changed manifest (new ETag) is fetched and parsed again."""
    state, url = manifest_server
    source = HttpManifestSource(url, SourceOptions(timeout=5))
    try:
        assert (await source.resolve("rec", PROD)).version == "8"
        state.body, state.etag = manifest(2, production="9"), '"2"'
        candidate = await source.resolve("rec", PROD)
    finally:
        await source.aclose()
    assert (candidate.version, candidate.revision) == ("9", 2)


async def test_last_modified_alone_is_enough(manifest_server: tuple[ManifestServer, str]) -> None:
    """Without an ETag, If-Modified-Since makes the steady-state poll a 304."""
    state, url = manifest_server
    state.use_etag = False
    source = HttpManifestSource(url, SourceOptions(timeout=5))
    try:
        await source.resolve("rec", PROD)
        await source.resolve("rec", PROD)
    finally:
        await source.aclose()
    assert state.not_modified == 1
    assert "If-None-Match" not in state.headers_seen[-1]


@pytest.mark.parametrize(
    ("status", "error"),
    [(404, NotFound), (410, NotFound), (503, SourceUnavailable), (500, SourceUnavailable),
     (429, SourceUnavailable), (403, SourceError)],
)  # fmt: skip
async def test_status_mapping(
    manifest_server: tuple[ManifestServer, str], status: int, error: type[Exception]
) -> None:
    """404/410 are NotFound, 5xx and 429 SourceUnavailable, 403 a plain SourceError."""
    state, url = manifest_server
    state.status = status
    source = HttpManifestSource(url, SourceOptions(timeout=5))
    try:
        with pytest.raises(error) as excinfo:
            await source.resolve("rec", PROD)
    finally:
        await source.aclose()
    assert type(excinfo.value) is error


async def test_body_over_limit_is_invalid(manifest_server: tuple[ManifestServer, str]) -> None:
    """A manifest larger than max_manifest_bytes is rejected before it is parsed."""
    state, url = manifest_server
    state.body = manifest(1) + b" " * 5000
    source = HttpManifestSource(url, SourceOptions(timeout=5, max_manifest_bytes=2000))
    try:
        with pytest.raises(InvalidManifest, match="limit"):
            await source.resolve("rec", PROD)
    finally:
        await source.aclose()


async def test_chunked_body_over_limit_stops_reading() -> None:
    """A body without Content-Length is streamed and cut at the limit, not read to the end."""
    sent = 0

    async def endless(request: web.Request) -> web.StreamResponse:
        nonlocal sent
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            for _ in range(10_000):
                await response.write(b" " * 4096)
                sent += 4096
        except (ConnectionResetError, RuntimeError):
            pass
        return response

    app = web.Application()
    app.router.add_get("/m.json", endless)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/m.json"
    source = HttpManifestSource(url, SourceOptions(timeout=5, max_manifest_bytes=100_000))
    try:
        with pytest.raises(InvalidManifest, match="limit"):
            await source.resolve("rec", PROD)
    finally:
        await source.aclose()
        await runner.cleanup()
    assert sent < 10_000 * 4096


async def test_black_hole_times_out(black_hole: str) -> None:
    """A server that accepts and never answers is SourceUnavailable, not a hang."""
    source = HttpManifestSource(f"http://{black_hole}/rec.json", SourceOptions(timeout=0.3))
    try:
        async with asyncio.timeout(10):  # a safety net far above the source timeout
            with pytest.raises(SourceUnavailable, match="timed out"):
                await source.resolve("rec", PROD)
    finally:
        await source.aclose()


async def test_connection_refused_is_unavailable() -> None:
    """Nothing listening on the port is SourceUnavailable."""
    from tests.servers import free_port

    source = HttpManifestSource(
        f"http://127.0.0.1:{free_port()}/rec.json", SourceOptions(timeout=2)
    )
    try:
        with pytest.raises(SourceUnavailable):
            await source.resolve("rec", PROD)
    finally:
        await source.aclose()


async def test_a_trickling_manifest_costs_the_timeout_and_no_more() -> None:
    """Headers, then a byte of the body every 0.1 s: unavailable within the source timeout,
    and the connection is dropped (the server sees its client leave)."""
    left: list[float] = []

    async def trickle(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Length": "100000"})
        await resp.prepare(request)
        try:
            while True:
                await resp.write(b" ")
                await asyncio.sleep(0.1)
        except ConnectionResetError:
            left.append(asyncio.get_running_loop().time())
        return resp

    app = web.Application()
    app.router.add_get("/rec.json", trickle)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/rec.json"
    source = HttpManifestSource(url, SourceOptions(timeout=0.5))
    loop = asyncio.get_running_loop()
    try:
        started = loop.time()
        with pytest.raises(SourceUnavailable, match="timed out"):
            await source.resolve("rec", PROD)
        for _ in range(100):  # wait for the server to notice, at most 10 s
            if left:
                break
            await asyncio.sleep(0.1)
        assert left and left[0] - started < 5.0
    finally:
        await source.aclose()
        await runner.cleanup()
