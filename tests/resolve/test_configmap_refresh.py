"""A forced refresh (``POST /refresh``) reads the source itself, not a cached copy."""

from __future__ import annotations

from tests.helpers import await_until as eventually
from tests.resolve.test_configmap_source import PROD, manifest, next_change, source_for


async def test_invalidate_makes_the_next_resolve_read_the_api(cmapi, make_client):
    """After invalidate(), one resolve GETs the ConfigMap although the watch is live."""
    cmapi.put("ml", "registry", {"recommender.json": manifest(1, "8")})
    source = source_for(cmapi, make_client)
    changes = aiter(source.changes())
    try:
        await next_change(changes)
        await eventually(lambda: source.live)
        await source.resolve("recommender", PROD)
        assert cmapi.count("get") == 0
        source.invalidate()
        assert (await source.resolve("recommender", PROD)).version == "8"
        assert cmapi.count("get") == 1
        await source.resolve("recommender", PROD)
        assert cmapi.count("get") == 1, "only the forced resolve bypasses the watched copy"
    finally:
        await source.aclose()
