"""A misbehaving MLflow artifact proxy on 127.0.0.1 (aiohttp.web, real sockets).

It speaks the two calls of MLflow's artifact proxy the fetcher uses —
``GET /api/2.0/mlflow-artifacts/artifacts?path=DIR`` (a listing) and
``GET /api/2.0/mlflow-artifacts/artifacts/FILE`` (a download) — either from a listing function of
its own (``listings``: path → entries, ``files``: path → bytes) or by forwarding to a real
tracking server (``upstream``). ``trickle`` makes every download send 1 KiB and then a byte every
``trickle_every`` seconds. Every listing request is counted in ``listed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

API = "/api/2.0/mlflow-artifacts/artifacts"

Listing = Callable[[str], list[dict[str, Any]]]


@dataclass
class Proxy:
    """State of the proxy."""

    listings: Listing | None = None
    files: dict[str, bytes] = field(default_factory=dict)
    upstream: str | None = None
    """Base URL of a real tracking server to forward to (``http://127.0.0.1:PORT``)."""
    trickle: bool = False
    trickle_every: float = 0.2
    listed: int = 0
    downloads: list[str] = field(default_factory=list)
    port: int = 0

    def uri(self, path: str) -> str:
        """The ``mlflow-artifacts+http`` URI of ``path`` behind this proxy."""
        return f"mlflow-artifacts+http://127.0.0.1:{self.port}/{path}"

    def _forward(self, url: str) -> tuple[int, bytes]:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(url, timeout=30) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, exc.read()


def build_app(proxy: Proxy) -> web.Application:
    """The aiohttp application of the proxy."""

    async def listing(request: web.Request) -> web.StreamResponse:
        proxy.listed += 1
        path = request.query.get("path", "")
        if proxy.upstream is not None:
            query = urllib.parse.urlencode({"path": path})
            status, body = await asyncio.to_thread(proxy._forward, f"{proxy.upstream}{API}?{query}")
            return web.Response(status=status, body=body, content_type="application/json")
        assert proxy.listings is not None
        return web.json_response({"files": proxy.listings(path)})

    async def download(request: web.Request) -> web.StreamResponse:
        path = request.match_info["path"]
        proxy.downloads.append(path)
        if proxy.upstream is not None:
            status, body = await asyncio.to_thread(
                proxy._forward, f"{proxy.upstream}{API}/{urllib.parse.quote(path)}"
            )
        elif path in proxy.files:
            status, body = 200, proxy.files[path]
        else:
            status, body = 404, b'{"error_code": "RESOURCE_DOES_NOT_EXIST"}'
        if status != 200 or not proxy.trickle:
            return web.Response(status=status, body=body)
        resp = web.StreamResponse(headers={"Content-Length": str(len(body))})
        await resp.prepare(request)
        with contextlib.suppress(ConnectionResetError):  # the client gave up: that is the point
            await resp.write(body[:1024])
            for index in range(1024, len(body)):
                await asyncio.sleep(proxy.trickle_every)
                await resp.write(body[index : index + 1])
        return resp

    app = web.Application()
    app.router.add_get(API, listing)
    app.router.add_get(API + "/{path:.+}", download)
    return app


async def start_proxy(proxy: Proxy) -> web.AppRunner:
    """Start ``proxy`` on a free loopback port (set in ``proxy.port``)."""
    runner = web.AppRunner(build_app(proxy), access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    proxy.port = sock.getsockname()[1]
    await web.SockSite(runner, sock).start()
    return runner
