"""A misbehaving HTTP origin on 127.0.0.1 (aiohttp.web, real sockets) for the HTTP fetcher tests.

Routes: ``/file`` (Range + If-Range), ``/drop`` (breaks the first body halfway, then serves
ranges), ``/drop-norange`` (breaks the first body, ignores Range afterwards), ``/drop-nocheck``
(breaks the first body; no ETag or Last-Modified), ``/drop-weak`` (breaks the first body; a
weak ETag and a Last-Modified), ``/hang-headers``, ``/hang-body``,
``/redirect-meta`` (to the cloud metadata address), ``/loop`` (redirects to itself),
``/big`` (Content-Length over the test limit), ``/big-chunked`` (same, without Content-Length),
``/start`` (redirects to a presigned-looking ``/signed?...`` that breaks once),
``/missing`` (404), ``/error`` (503), and ``/credit model.bin`` and ``/modèle.bin`` (names a URL
must percent-encode). Every request is recorded in ``hits``.

Answers to a resume that do not hold the bytes asked for (each breaks its first body after
``BREAK_AT`` bytes of ``big``, an 8 MiB body): ``/resume-200-tail`` answers the ``Range`` with a
200 that carries a ``Content-Range`` and only the tail; ``/resume-206-wrong`` with a 206 from
byte 0; ``/resume-200-same-etag`` with a 200 of the tail alone under the same strong ETag. A
request without ``Range`` always gets the whole body. ``/always-short`` declares its length and
sends 1000 bytes less on every answer. ``/trickle`` sends its headers (``Content-Length``
10 MiB) and 1 KiB, then a byte every ``trickle_every`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

SECRET = "c2VjcmV0LXNpZ25hdHVyZQ"
SIGNED_QUERY = f"X-Amz-Credential=AKIAEXAMPLE&X-Amz-Signature={SECRET}"
ETAG = '"v1-abc"'
LAST_MODIFIED = "Wed, 21 Oct 2026 07:28:00 GMT"


@dataclass
class Hit:
    """One request as the origin saw it."""

    path: str
    range: str | None
    if_range: str | None
    status: int = 0
    raw: str = ""


@dataclass
class Origin:
    """State of the origin: the body it serves and every request it got."""

    data: bytes = field(default_factory=lambda: os.urandom(3 * (1 << 20) + 4321))
    big: bytes = field(default_factory=lambda: os.urandom(8 << 20))
    trickle_every: float = 0.2
    hits: list[Hit] = field(default_factory=list)
    dropped: set[str] = field(default_factory=set)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0

    def url(self, path: str) -> str:
        """Absolute URL of ``path`` on this origin."""
        return f"http://127.0.0.1:{self.port}{path}"

    def seen(self, path: str) -> list[Hit]:
        """Requests for ``path``, in order."""
        return [h for h in self.hits if h.path == path]


def _ranged(
    origin: Origin, request: web.Request, hit: Hit, validators: dict[str, str]
) -> web.Response:
    """Serve the body, or the requested tail (206) when If-Range matches a validator."""
    headers = {"Accept-Ranges": "bytes", **validators}
    rng = request.headers.get("Range")
    strong = {v for k, v in validators.items() if not v.startswith("W/")}
    if rng and rng.startswith("bytes=") and request.headers.get("If-Range") in strong:
        start = int(rng.removeprefix("bytes=").split("-")[0])
        size = len(origin.data)
        headers["Content-Range"] = f"bytes {start}-{size - 1}/{size}"
        hit.status = 206
        return web.Response(status=206, body=origin.data[start:], headers=headers)
    hit.status = 200
    return web.Response(body=origin.data, headers=headers)


async def _drop_once(
    origin: Origin, request: web.Request, hit: Hit, headers: dict[str, str]
) -> web.StreamResponse:
    """Send the headers and half the body, then break the connection."""
    origin.dropped.add(request.path)
    hit.status = 200
    resp = web.StreamResponse(headers={**headers, "Content-Length": str(len(origin.data))})
    await resp.prepare(request)
    await resp.write(origin.data[: len(origin.data) // 2])
    assert request.transport is not None
    request.transport.abort()
    return resp


VALIDATORS = {
    "/drop": {"ETag": ETAG},
    "/signed": {"ETag": ETAG},
    "/drop-norange": {"ETag": ETAG},
    "/drop-nocheck": {},
    "/drop-weak": {"ETag": 'W/"weak"', "Last-Modified": LAST_MODIFIED},
}


async def _dropping(origin: Origin, request: web.Request, hit: Hit) -> web.StreamResponse:
    path = request.path
    validators = VALIDATORS[path]
    if path not in origin.dropped:
        return await _drop_once(origin, request, hit, validators)
    if path == "/drop-norange":
        hit.status = 200
        return web.Response(body=origin.data, headers=validators)
    return _ranged(origin, request, hit, validators)


async def _hang_headers(origin: Origin, request: web.Request, hit: Hit) -> web.StreamResponse:
    await origin.release.wait()
    return web.Response(body=b"late")


async def _hang_body(origin: Origin, request: web.Request, hit: Hit) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Length": "10000"})
    await resp.prepare(request)
    await resp.write(b"x" * 1000)
    await origin.release.wait()
    return resp


async def _big_chunked(origin: Origin, request: web.Request, hit: Hit) -> web.StreamResponse:
    resp = web.StreamResponse()
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    for _ in range(32):
        await resp.write(b"x" * (64 << 10))
    await resp.write_eof()
    return resp


async def _file(origin: Origin, request: web.Request, hit: Hit) -> web.StreamResponse:
    return _ranged(origin, request, hit, {"ETag": ETAG})


async def _big(origin: Origin, request: web.Request, hit: Hit) -> web.StreamResponse:
    return web.Response(body=b"x" * (2 << 20))


def _redirect(location: str) -> Handler:
    async def handler(origin: Origin, request: web.Request, hit: Hit) -> web.StreamResponse:
        raise web.HTTPFound(location)

    return handler


async def _error(origin: Origin, request: web.Request, hit: Hit) -> web.StreamResponse:
    raise web.HTTPServiceUnavailable


BREAK_AT = 3 << 20


async def _broken_whole(request: web.Request, hit: Hit, body: bytes) -> web.StreamResponse:
    """The whole body announced, ``BREAK_AT`` bytes sent, then the connection cut."""
    hit.status = 200
    headers = {"ETag": ETAG, "Accept-Ranges": "bytes", "Content-Length": str(len(body))}
    resp = web.StreamResponse(headers=headers)
    await resp.prepare(request)
    await resp.write(body[:BREAK_AT])
    assert request.transport is not None
    request.transport.abort()
    return resp


async def _bad_resume(origin: Origin, request: web.Request, hit: Hit) -> web.StreamResponse:
    body, size = origin.big, len(origin.big)
    rng = request.headers.get("Range")
    if not rng:
        if request.path not in origin.dropped:
            origin.dropped.add(request.path)
            return await _broken_whole(request, hit, body)
        hit.status = 200
        return web.Response(body=body, headers={"ETag": ETAG})
    start = int(rng.removeprefix("bytes=").split("-")[0])
    tail = body[start:]
    if request.path == "/resume-200-tail":
        hit.status = 200
        headers = {"ETag": ETAG, "Content-Range": f"bytes {start}-{size - 1}/{size}"}
        return web.Response(body=tail, headers=headers)
    if request.path == "/resume-206-wrong":
        hit.status = 206
        headers = {"ETag": ETAG, "Content-Range": f"bytes 0-{len(tail) - 1}/{size}"}
        return web.Response(status=206, body=body[: len(tail)], headers=headers)
    hit.status = 200  # /resume-200-same-etag: the tail as if it were the whole
    return web.Response(body=tail, headers={"ETag": ETAG})


async def _always_short(origin: Origin, request: web.Request, hit: Hit) -> web.StreamResponse:
    body, size = origin.data, len(origin.data)
    rng = request.headers.get("Range")
    start = int(rng.removeprefix("bytes=").split("-")[0]) if rng else 0
    hit.status = 206 if start else 200
    headers = {"ETag": ETAG, "Content-Length": str(size - start)}
    if start:
        headers["Content-Range"] = f"bytes {start}-{size - 1}/{size}"
    resp = web.StreamResponse(status=hit.status, headers=headers)
    await resp.prepare(request)
    await resp.write(body[start : max(start, size - 1000)])
    assert request.transport is not None
    request.transport.abort()
    return resp


async def _trickle(origin: Origin, request: web.Request, hit: Hit) -> web.StreamResponse:
    hit.status = 200
    resp = web.StreamResponse(headers={"Content-Length": str(10 << 20), "ETag": ETAG})
    await resp.prepare(request)
    with contextlib.suppress(ConnectionResetError):  # the client gave up: that is the point
        await resp.write(b"x" * 1024)
        for _ in range(10 << 20):
            await asyncio.sleep(origin.trickle_every)
            await resp.write(b"x")
    return resp


Handler = Callable[[Origin, web.Request, Hit], Awaitable[web.StreamResponse]]
ROUTES: dict[str, Handler] = {
    "/file": _file,
    "/drop": _dropping,
    "/signed": _dropping,
    "/drop-norange": _dropping,
    "/drop-nocheck": _dropping,
    "/drop-weak": _dropping,
    "/hang-headers": _hang_headers,
    "/hang-body": _hang_body,
    "/redirect-meta": _redirect("http://169.254.169.254/latest/meta-data/iam/"),
    "/loop": _redirect("/loop"),
    "/start": _redirect(f"/signed?{SIGNED_QUERY}"),
    "/big": _big,
    "/big-chunked": _big_chunked,
    "/error": _error,
    "/resume-200-tail": _bad_resume,
    "/resume-206-wrong": _bad_resume,
    "/resume-200-same-etag": _bad_resume,
    "/always-short": _always_short,
    "/trickle": _trickle,
    "/credit model.bin": _file,  # a name with a space: requested as /credit%20model.bin
    "/mod\u00e8le.bin": _file,
}


def build_app(origin: Origin) -> web.Application:
    """The aiohttp application of the origin: every request is recorded, then routed."""

    async def handle(request: web.Request) -> web.StreamResponse:
        hit = Hit(request.path, request.headers.get("Range"), request.headers.get("If-Range"))
        hit.raw = request.raw_path
        origin.hits.append(hit)
        route = ROUTES.get(request.path)
        if route is None:
            raise web.HTTPNotFound
        return await route(origin, request, hit)

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    return app


async def start_origin() -> tuple[Origin, web.AppRunner]:
    """Start the origin on a free loopback port."""
    origin = Origin()
    runner = web.AppRunner(build_app(origin), access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    origin.port = sock.getsockname()[1]
    await web.SockSite(runner, sock).start()
    return origin, runner


@contextlib.asynccontextmanager
async def trickling_origin(every: float) -> AsyncIterator[Origin]:
    """A started origin whose ``/trickle`` sends a byte every ``every`` s; stopped on exit."""
    server, runner = await start_origin()
    server.trickle_every = every
    try:
        yield server
    finally:
        server.release.set()
        await runner.cleanup()
