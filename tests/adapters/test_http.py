"""One status table: every HTTP-speaking caller maps a status the same way; hooks are held to
the address policy."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from pointercache.adapters.http import (
    FETCH,
    SOURCE,
    StatusKind,
    classify_status,
    send,
    status_error,
)
from pointercache.adapters.kube.errors import Gone
from pointercache.adapters.kube.errors import status_error as kube_status_error
from pointercache.errors import (
    ArtifactNotFound,
    FetchError,
    FetchUnavailable,
    ForbiddenURI,
    KubeConflict,
    KubeError,
    KubeForbidden,
    KubeNotFound,
    KubeUnavailable,
    NotFound,
    SourceError,
    SourceUnavailable,
    Transient,
)

TABLE = [
    # status, kind, registry answer (source), artifact transfer (fetch), Kubernetes API
    (404, StatusKind.NOT_FOUND, NotFound, ArtifactNotFound, KubeNotFound),
    (410, StatusKind.NOT_FOUND, NotFound, ArtifactNotFound, Gone),
    (408, StatusKind.UNAVAILABLE, SourceUnavailable, FetchUnavailable, KubeUnavailable),
    (425, StatusKind.UNAVAILABLE, SourceUnavailable, FetchUnavailable, KubeUnavailable),
    (429, StatusKind.UNAVAILABLE, SourceUnavailable, FetchUnavailable, KubeUnavailable),
    (500, StatusKind.UNAVAILABLE, SourceUnavailable, FetchUnavailable, KubeUnavailable),
    (503, StatusKind.UNAVAILABLE, SourceUnavailable, FetchUnavailable, KubeUnavailable),
    (599, StatusKind.UNAVAILABLE, SourceUnavailable, FetchUnavailable, KubeUnavailable),
    (401, StatusKind.DENIED, SourceError, FetchError, KubeForbidden),
    (403, StatusKind.DENIED, SourceError, FetchError, KubeForbidden),
    (400, StatusKind.REFUSED, SourceError, FetchError, KubeError),
    (409, StatusKind.REFUSED, SourceError, FetchError, KubeConflict),
    (412, StatusKind.REFUSED, SourceError, FetchError, KubeError),
    (418, StatusKind.REFUSED, SourceError, FetchError, KubeError),
]


@pytest.mark.parametrize(("status", "kind", "source", "fetch", "kube"), TABLE)
def test_status_table(status: int, kind: StatusKind, source: type, fetch: type, kube: type) -> None:
    """Each family gets the class the table names; transient exactly when the kind is."""
    assert classify_status(status) is kind
    as_source = status_error(status, "registry", SOURCE)
    as_fetch = status_error(status, "artifact", FETCH)
    assert type(as_source) is source
    assert type(as_fetch) is fetch
    assert type(kube_status_error(status, "api")) is kube
    transient = kind is StatusKind.UNAVAILABLE
    assert isinstance(as_source, Transient) is transient
    assert isinstance(as_fetch, Transient) is transient
    assert f"HTTP {status}" in str(as_source)


def test_no_response_at_all_is_a_transient_kube_error() -> None:
    """Status 0 (no response) from the Kubernetes client is KubeUnavailable."""
    assert isinstance(kube_status_error(0, "api"), KubeUnavailable)


@pytest.fixture
async def hook_server() -> AsyncIterator[int]:
    """A loopback model server whose reload endpoint answers 200; yields its port."""

    async def reload(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/reload", reload)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


async def test_send_names_only_the_hooks_own_host(hook_server: int) -> None:
    """A hook URL naming 127.0.0.1 or localhost is reached; a DNS name answering loopback is not."""
    port = hook_server
    dns = {"localhost": ["127.0.0.1"], "hook.example.com": ["127.0.0.1"]}

    def resolver(host: str, _port: int | None) -> list[str]:
        return dns[host]

    for host in ("127.0.0.1", "localhost"):
        url = f"http://{host}:{port}/reload"
        assert await send("POST", url, seconds=5, what="hook", resolver=resolver) == 200
    url = f"http://hook.example.com:{port}/reload"
    with pytest.raises(ForbiddenURI, match="loopback"):
        await send("POST", url, seconds=5, what="hook", resolver=resolver)
