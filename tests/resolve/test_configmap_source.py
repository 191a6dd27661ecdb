"""The configmap:// registry source: watch, resume, re-list, resolve."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Callable

import pytest

from pointercache.adapters.kube.client import KubeClient, KubeConfig
from pointercache.errors import ConfigError, InvalidManifest, NotFound, SourceUnavailable
from pointercache.model.candidate import Selector
from pointercache.model.uris import configmap_ref as parse_uri
from pointercache.resolve.sources import SourceOptions, open_source
from pointercache.resolve.sources.configmap import ConfigMapSource
from tests.helpers import await_until as eventually
from tests.kube_api import ConfigMapApi

PROD = Selector.parse("alias:production")
DIGEST = "sha256:" + "ab" * 32


def manifest(revision: int, production: str, model: str = "recommender") -> str:
    """A manifest document whose production alias names ``production``."""
    versions = {
        v: {
            "uri": f"s3://models/{model}/{v}/",
            "digest": DIGEST,
            "size_bytes": 10,
            "signature": None,
        }
        for v in {"8", production}
    }
    return json.dumps(
        {
            "schema": 1,
            "model": model,
            "revision": revision,
            "aliases": {"production": production},
            "versions": versions,
        }
    )


def source_for(
    cmapi: ConfigMapApi,
    make_client: Callable[[str], KubeClient],
) -> ConfigMapSource:
    return ConfigMapSource(
        "configmap://ml/registry", SourceOptions(timeout=5.0), client=make_client(cmapi.url)
    )


async def next_change(changes: AsyncIterator[None]) -> None:
    await asyncio.wait_for(anext(changes), 15)


async def test_watch_delivers_changes_as_events(cmapi, make_client):
    """A change to the ConfigMap reaches changes() over the open watch: no re-list, no polling."""
    cmapi.put("ml", "registry", {"recommender.json": manifest(1, "8")})
    source = source_for(cmapi, make_client)
    changes = aiter(source.changes())
    try:
        await next_change(changes)
        await eventually(lambda: source.live)
        first = await source.resolve("recommender", PROD)
        cmapi.put("ml", "registry", {"recommender.json": manifest(2, "9")})
        await next_change(changes)
        second = await source.resolve("recommender", PROD)
    finally:
        await source.aclose()
    assert (first.version, first.revision) == ("8", 1)
    assert (second.version, second.revision, second.registry) == ("9", 2, "configmap://ml/registry")
    assert cmapi.count("list") == 1
    assert cmapi.count("watch") == 1
    assert cmapi.count("get") == 0, "a live watch answers resolve() from its copy"
    assert cmapi.params("watch")[0]["fieldSelector"] == "metadata.name=registry"
    assert cmapi.params("watch")[0]["allowWatchBookmarks"] == "true"


@pytest.mark.parametrize("interrupt", ["disconnect_watches", "break_watches"])
async def test_interrupted_watch_resumes_from_last_resource_version(cmapi, make_client, interrupt):
    """After the stream ends cleanly or breaks mid-way, the watch resumes from the last event."""
    cmapi.put("ml", "registry", {"recommender.json": manifest(1, "8")})
    source = source_for(cmapi, make_client)
    changes = aiter(source.changes())
    try:
        await next_change(changes)
        await eventually(lambda: cmapi.open_watches == 1 and source.live)
        seen = cmapi.put("ml", "registry", {"recommender.json": manifest(2, "9")})
        await next_change(changes)
        getattr(cmapi, interrupt)()
        cmapi.put("ml", "registry", {"recommender.json": manifest(3, "10")})
        await next_change(changes)
        candidate = await source.resolve("recommender", PROD)
    finally:
        await source.aclose()
    assert candidate.version == "10"
    watches = cmapi.params("watch")
    assert len(watches) == 2
    assert watches[1]["resourceVersion"] == seen["metadata"]["resourceVersion"]
    assert cmapi.count("list") == 1, "a resumable watch does not re-list"


@pytest.mark.parametrize("as_status", [False, True], ids=["error-event", "http-410"])
async def test_gone_triggers_relist(cmapi, make_client, as_status):
    """A 410 Gone on resume makes the watch list again and pick up what it missed."""
    cmapi.gone_as_status = as_status
    cmapi.put("ml", "registry", {"recommender.json": manifest(1, "8")})
    source = source_for(cmapi, make_client)
    changes = aiter(source.changes())
    try:
        await next_change(changes)
        await eventually(lambda: cmapi.open_watches == 1)
        seen = cmapi.put("ml", "registry", {"recommender.json": manifest(2, "9")})
        await next_change(changes)
        cmapi.disconnect_watches()
        cmapi.put("ml", "registry", {"recommender.json": manifest(3, "10")})
        cmapi.compact()
        await next_change(changes)
        await eventually(lambda: cmapi.open_watches == 1)
        candidate = await source.resolve("recommender", PROD)
    finally:
        await source.aclose()
    assert candidate.version == "10"
    order = [a for a, _ in cmapi.requests if a in {"list", "watch"}]
    assert order == ["list", "watch", "watch", "list", "watch"]
    watches = cmapi.params("watch")
    assert watches[1]["resourceVersion"] == seen["metadata"]["resourceVersion"]
    assert watches[2]["resourceVersion"] == str(cmapi.rv), "the new watch starts at the list"


async def test_resolve_without_watch_gets_the_configmap(cmapi, make_client):
    """Without a watch, resolve() GETs the ConfigMap; manifest.json serves a single model."""
    cmapi.put("ml", "registry", {"manifest.json": manifest(4, "8", model="ranker")})
    source = source_for(cmapi, make_client)
    try:
        candidate = await source.resolve("ranker", PROD)
        with pytest.raises(InvalidManifest):
            await source.resolve("recommender", PROD)
    finally:
        await source.aclose()
    assert (candidate.model, candidate.version, candidate.revision) == ("ranker", "8", 4)
    assert cmapi.count("get") == 2


async def test_configmap_without_the_key_is_not_found(cmapi, make_client):
    """A ConfigMap with neither <model>.json nor manifest.json has no answer for that model."""
    cmapi.put("ml", "registry", {"ranker.json": manifest(5, "8", model="ranker")})
    source = source_for(cmapi, make_client)
    try:
        with pytest.raises(NotFound, match=r"recommender\.json"):
            await source.resolve("recommender", PROD)
    finally:
        await source.aclose()


async def test_missing_configmap_is_not_found(cmapi, make_client):
    """A ConfigMap that does not exist is NotFound, not an outage."""
    source = source_for(cmapi, make_client)
    try:
        with pytest.raises(NotFound):
            await source.resolve("recommender", PROD)
    finally:
        await source.aclose()


async def test_api_down_is_source_unavailable():
    """With the API server unreachable, resolve() fails fast with SourceUnavailable."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    options = SourceOptions(timeout=2.0, kube=KubeConfig(host=f"http://127.0.0.1:{port}"))
    source = open_source("configmap://ml/registry", options)
    try:
        with pytest.raises(SourceUnavailable):
            await source.resolve("recommender", PROD)
    finally:
        await source.aclose()


@pytest.mark.parametrize(
    "uri",
    [
        "configmap://ml",
        "configmap://ML/x",
        "configmap:///x",
        "configmap://ml/x/y",
        "configmap://ml/x?key=a",
    ],
)
def test_bad_uri_is_config_error(uri):
    """A configmap:// URI must be exactly namespace/name with valid Kubernetes names."""
    with pytest.raises(ConfigError):
        parse_uri(uri)


async def test_resume_uses_the_bookmark_resource_version(cmapi, make_client):
    """A BOOKMARK moves the resume point even when the watched ConfigMap did not change."""
    cmapi.put("ml", "registry", {"recommender.json": manifest(1, "8")})
    source = source_for(cmapi, make_client)
    changes = aiter(source.changes())
    try:
        await next_change(changes)
        await eventually(lambda: cmapi.open_watches == 1)
        cmapi.put("ml", "unrelated", {"x": "y"})
        cmapi.bookmark()
        bookmark_rv = str(cmapi.rv)
        cmapi.disconnect_watches()  # queued after the bookmark: it is read before the close
        await eventually(lambda: cmapi.count("watch") == 2)
    finally:
        await source.aclose()
    assert cmapi.params("watch")[1]["resourceVersion"] == bookmark_rv


async def test_watch_errors_back_off_and_resolve_falls_back_to_get(cmapi, make_client):
    """While the watch cannot connect, resolve() GETs; once it connects, changes flow again."""
    cmapi.put("ml", "registry", {"recommender.json": manifest(1, "8")})
    cmapi.fail_watches = 1_000_000
    source = source_for(cmapi, make_client)
    changes = aiter(source.changes())
    try:
        await next_change(changes)
        await eventually(lambda: cmapi.count("watch") >= 1)  # a watch has failed
        during = await source.resolve("recommender", PROD)
        gets_during_outage = cmapi.count("get")
        cmapi.fail_watches = 0
        await eventually(lambda: source.live)
        cmapi.put("ml", "registry", {"recommender.json": manifest(2, "9")})
        await next_change(changes)
        after = await source.resolve("recommender", PROD)
        watcher = source._watcher
    finally:
        await source.aclose()
    assert (during.version, after.version) == ("8", "9")
    assert gets_during_outage == 1
    assert cmapi.count("get") == 1, "once live, the watch answers"
    assert cmapi.count("watch") >= 2
    assert cmapi.count("list") == 1
    assert watcher is not None
    assert not watcher._thread.is_alive(), "aclose() ends the watch thread"
