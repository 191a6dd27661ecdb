"""``POST /refresh`` on a real sidecar bypasses the HTTP manifest's cache, end to end."""

from __future__ import annotations

import asyncio
import json
import signal

from tests.e2e.conftest import World
from tests.e2e.helpers import MODEL, Sidecar, wait_until
from tests.helpers import local_manifest
from tests.resolve.test_http_manifest import ManifestServer, manifest_server  # noqa: F401


async def test_forced_refresh_sends_an_unconditional_no_cache_get(
    world: World,
    cli_env: dict[str, str],
    manifest_server: tuple[ManifestServer, str],  # noqa: F811 - the fixture imported above
) -> None:
    """After start-up the source holds an ETag; the forced GET carries none, and no-cache."""
    state, url = manifest_server
    artifacts = {"1": world.base / "artifacts" / "v1"}
    state.body = json.dumps(local_manifest(MODEL, 1, {"production": "1"}, artifacts)).encode()
    args = [
        "--model",
        MODEL,
        "--registry",
        url,
        "--root",
        str(world.root),
        "--lkg-dir",
        str(world.lkg),
        "--poll-interval",
        "3600",
    ]
    sidecar = await asyncio.to_thread(Sidecar, cli_env, args)
    try:
        await asyncio.to_thread(wait_until, lambda: sidecar.status()["ready"], 30)
        before = len(state.headers_seen)
        code, body = await asyncio.to_thread(sidecar.get, "/refresh", method="POST")
        assert (code, json.loads(body)["outcome"]) == (200, "unchanged")
    finally:
        await asyncio.to_thread(sidecar.stop, signal.SIGTERM)
    forced = state.headers_seen[before]
    assert forced.get("Cache-Control") == "no-cache"
    assert "If-None-Match" not in forced
