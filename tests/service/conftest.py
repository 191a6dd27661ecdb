"""An in-process sidecar (refresh loop and load tracker) over a file:// registry, and a fake hook.

The hook server speaks only our own protocol (the ``--on-flip-url`` JSON body, any answer
status): it records every call and answers with the statuses it is told, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from pointercache.service.loaded import LoadOptions
from pointercache.service.refresher import Refresher, RefreshOptions
from pointercache.service.state import Outcome
from pointercache.sync.bootstrap import resolve_and_publish
from pointercache.sync.settings import Settings
from pointercache.sync.wiring import Parts, build
from sidecar import telemetry as sdk
from tests.helpers import MODEL, make_artifact, write_manifest


@dataclass
class HookServer:
    """A loopback HTTP server standing in for a model server's reload hook and probe."""

    url: str = ""
    calls: list[tuple[str, str, Any]] = field(default_factory=list)
    """(method, path with query, JSON body or None) of every request, in order."""
    answers: dict[str, list[int]] = field(default_factory=dict)
    """Path → statuses to answer in turn (the last one repeats); 200 when absent."""
    hang: set[str] = field(default_factory=set)
    """Paths that never answer."""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Record the call and answer as told."""
        body = await request.read()
        self.calls.append((request.method, request.path_qs, orjson.loads(body) if body else None))
        if request.path in self.hang:
            await asyncio.Event().wait()
        statuses = self.answers.get(request.path, [200])
        status = statuses.pop(0) if len(statuses) > 1 else statuses[0]
        if 300 <= status < 400:
            raise web.HTTPFound(location="/elsewhere")
        return web.json_response({"status": status}, status=status)

    def paths(self, method: str | None = None) -> list[str]:
        """The paths called so far (with query), optionally of one method."""
        return [p for m, p, _ in self.calls if method is None or m == method]


@pytest.fixture
async def hook_server() -> AsyncIterator[HookServer]:
    """A running ``HookServer`` on a free loopback port."""
    server = HookServer()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", server.handle)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield server
    finally:
        await runner.cleanup()


@dataclass
class Pod:
    """One pod's volume and registry, with its sidecar's refresher running in this loop."""

    base: Path
    parts: Parts
    refresher: Refresher
    metrics: Callable[[], tuple[bytes, str]]

    @property
    def root(self) -> Path:
        """The shared volume."""
        return self.parts.store.root

    async def publish(self, revision: int, version: str) -> Outcome:
        """Move the production alias to ``version``, refresh once and wait (up to 30 s) for the
        download that the refresh starts in the background to end."""
        write_manifest(
            self.base / "registry.json",
            self.base,
            revision=revision,
            aliases={"production": version},
        )
        outcome = await self.refresher.refresh("test")
        if outcome is Outcome.IN_PROGRESS:
            outcome = await self.refresher.settled(30.0) or outcome
        return outcome

    def staged(self) -> list[str]:
        """Versions installed on the volume, newest first."""
        return [p.version for _, p in self.parts.store.versions(MODEL)]

    def metric(self, name: str, **labels: str) -> float | None:
        """The value of one sample of ``/metrics`` (None when absent)."""
        text = self.metrics()[0].decode()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and labels.items() <= sample.labels.items():
                    return float(sample.value)
        return None


PodFactory = Callable[..., Awaitable[Pod]]


@pytest.fixture
async def make_pod(tmp_path: Path) -> AsyncIterator[PodFactory]:
    """Build pods whose init step published v1 (artifacts v1-v4 exist); close them after."""
    stack = contextlib.AsyncExitStack()
    names = itertools.count()

    async def factory(options: LoadOptions | None = None, *, keep_versions: int = 1) -> Pod:
        base = tmp_path / f"pod-{next(names)}"
        for version in ("1", "2", "3", "4"):
            make_artifact(base, version)
        registry = base / "registry.json"
        write_manifest(registry, base, revision=1, aliases={"production": "1"})
        settings = Settings(
            model=MODEL,
            registry=(registry.as_uri(),),
            root=base / "volume",
            keep_versions=keep_versions,
        ).validate()
        parts = build(settings)
        stack.enter_context(parts.store.lock())
        await resolve_and_publish(parts)
        telemetry, render, provider = sdk.setup(MODEL)
        stack.callback(provider.shutdown)
        refresher = Refresher(
            parts, RefreshOptions(poll_interval=3600), telemetry, loads=options or LoadOptions()
        )
        await refresher.load_current()
        refresher.loads.started()
        stack.push_async_callback(parts.aclose)
        stack.push_async_callback(refresher.loads.aclose)
        return Pod(base, parts, refresher, render)

    async with stack:
        yield factory
