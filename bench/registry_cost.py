"""Registry cost benchmark: requests and bytes per poll, in steady state, of an HTTP manifest.

A local aiohttp server serves one manifest (``--versions`` entries, about 200 bytes each) with an
ETag; a counting TCP proxy in front of it measures the bytes on the wire both ways. The
``HttpManifestSource`` polls it ``--polls`` times without a change; for comparison, a plain
unconditional GET does the same (what a naive poller or a cache with a TTL pays). Expected: after
the first poll every answer is a ``304 Not Modified`` with no body.

Run: ``.venv/bin/python -m bench.registry_cost [--polls 100] [--versions 50]``
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
import orjson
from aiohttp import web

from bench import print_table
from pointercache.model.candidate import Selector
from pointercache.resolve.sources import SourceOptions
from pointercache.resolve.sources.http import HttpManifestSource


@dataclass
class Counters:
    """What crossed the proxy and what the origin answered."""

    requests: int = 0
    not_modified: int = 0
    up: int = 0
    down: int = 0


def make_manifest(versions: int) -> bytes:
    """A manifest for model 'rec' with ``versions`` entries."""
    entries = {
        str(v): {
            "uri": f"s3://models/rec/{v}/",
            "digest": "sha256:" + hashlib.sha256(str(v).encode()).hexdigest(),
            "size_bytes": 1_500_000_000,
        }
        for v in range(1, versions + 1)
    }
    doc = {"schema": 1, "model": "rec", "revision": versions, "versions": entries,
           "aliases": {"production": str(versions), "candidate": str(versions)}}  # fmt: skip
    return orjson.dumps(doc)


async def origin(body: bytes, counters: Counters) -> web.AppRunner:
    """The manifest server: ETag validator, 304 on a match."""
    etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'

    async def handle(request: web.Request) -> web.Response:
        counters.requests += 1
        if request.headers.get("If-None-Match") == etag:
            counters.not_modified += 1
            return web.Response(status=304, headers={"ETag": etag})
        return web.Response(body=body, headers={"ETag": etag}, content_type="application/json")

    app = web.Application()
    app.router.add_get("/rec.json", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner


async def counting_proxy(target_port: int, counters: Counters) -> asyncio.Server:
    """A TCP proxy that counts bytes in both directions."""

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, up: bool) -> None:
        try:
            while data := await reader.read(65536):
                if up:
                    counters.up += len(data)
                else:
                    counters.down += len(data)
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", target_port)
        await asyncio.gather(pipe(client_r, server_w, True), pipe(server_r, client_w, False))

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def poll_conditional(url: str, polls: int, mark: Callable[[], None]) -> None:
    """Poll with the HTTP manifest source (conditional GET, one session)."""
    source = HttpManifestSource(url, SourceOptions(timeout=5))
    try:
        for i in range(polls):
            await source.resolve("rec", Selector.parse("alias:production"))
            if i == 0:
                mark()
    finally:
        await source.aclose()


async def poll_plain(url: str, polls: int, mark: Callable[[], None]) -> None:
    """Poll with unconditional GETs on one session (the baseline)."""
    async with aiohttp.ClientSession() as session:
        for i in range(polls):
            async with session.get(url) as response:
                await response.read()
            if i == 0:
                mark()


async def measure(name: str, polls: int, body: bytes, conditional: bool) -> list[str]:
    """Run one poller against a fresh origin and proxy; one table row."""
    counters = Counters()
    runner = await origin(body, counters)
    proxy = await counting_proxy(runner.addresses[0][1], counters)
    url = f"http://127.0.0.1:{proxy.sockets[0].getsockname()[1]}/rec.json"
    after_first: list[int] = []

    def mark() -> None:
        after_first[:] = [counters.up + counters.down]

    try:
        await (poll_conditional if conditional else poll_plain)(url, polls, mark)
    finally:
        proxy.close()
        await runner.cleanup()
    steady = polls - 1
    share = counters.not_modified / polls
    return [
        name,
        str(counters.requests),
        f"{counters.requests / polls:.2f}",
        f"{(counters.up + counters.down) / polls:,.0f}",
        f"{(counters.up + counters.down - after_first[0]) / steady:,.0f}",
        f"{share:.0%}",
        f"{counters.not_modified}/{steady}",
    ]


async def run(polls: int, versions: int) -> None:
    """Measure both pollers and print the table."""
    body = make_manifest(versions)
    rows = [
        await measure("conditional (pointercache)", polls, body, conditional=True),
        await measure("unconditional GET", polls, body, conditional=False),
    ]
    print_table(
        f"HTTP manifest polling: {polls} polls, manifest {len(body):,} bytes, no change",
        ["poller", "requests", "req/poll", "wire bytes/poll", "steady bytes/poll", "304 share",
         "304s/steady polls"],
        rows,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    """Run the registry cost benchmark and print its table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--polls", type=int, default=100)
    parser.add_argument("--versions", type=int, default=50)
    args = parser.parse_args(argv)
    asyncio.run(run(args.polls, args.versions))


if __name__ == "__main__":
    main()
