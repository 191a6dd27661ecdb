"""The sidecar process against a Kubernetes API (kmock on loopback, the real client).

A ``configmap://`` registry is watched (changes arrive as events), the cluster LKG ConfigMap is
kept current, and the pod gets its ``pointercache.dev/*`` annotations and Events.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kmock
import pytest

from pointercache.model.digest import tree_digest
from tests.e2e.conftest import World
from tests.e2e.helpers import MODEL, Sidecar, wait_until
from tests.kube_api import ConfigMapApi


@dataclass
class Cluster:
    """kmock's emulator for pods and events, and ConfigMaps with resourceVersions."""

    handler: kmock.KubernetesEmulator
    configmaps: ConfigMapApi
    kubeconfig: Path


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    """An API server on 127.0.0.1 with pod ml/server-0 and a kubeconfig pointing at it."""
    async with kmock.KubernetesEmulator() as handler, kmock.Server(handler) as server:
        url = str(server.url).rstrip("/")
        handler.objects["v1/pods", "ml", "server-0"] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "server-0", "namespace": "ml", "annotations": {}},
        }
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "current-context": "test",
                    "clusters": [{"name": "test", "cluster": {"server": url}}],
                    "users": [{"name": "test", "user": {}}],
                    "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
                }
            )
        )
        api = ConfigMapApi(handler, url)
        yield Cluster(handler, api, kubeconfig)
        api.disconnect_watches()
        await asyncio.sleep(0)


def manifest(world: World, revision: int, production: str) -> str:
    """The manifest JSON naming ``production`` (file:// artifacts of ``world``)."""
    versions: dict[str, Any] = {}
    for v in ("1", "2"):
        art = world.base / "artifacts" / f"v{v}"
        digest, size = tree_digest(art)
        versions[v] = {"uri": art.as_uri(), "digest": digest, "size_bytes": size}
    return json.dumps(
        {
            "schema": 1,
            "model": MODEL,
            "revision": revision,
            "aliases": {"production": production},
            "versions": versions,
        }
    )


def requests_to(handler: kmock.KubernetesEmulator, method: str, part: str) -> list[Any]:
    """Requests kmock received with ``method`` whose path contains ``part``."""
    return [r for r in handler if r.method.value == method and part in r.url.path]


async def test_sidecar_follows_a_configmap_registry_and_reports_to_the_cluster(
    world: World, cli_env: dict[str, str], cluster: Cluster
) -> None:
    """A ConfigMap change flips the pointer; LKG ConfigMap, annotations and Events follow."""
    cluster.configmaps.put("ml", "registry", {f"{MODEL}.json": manifest(world, 1, "1")})
    env = cli_env | {"KUBECONFIG": str(cluster.kubeconfig)}
    args = [
        "--model",
        MODEL,
        "--registry",
        "configmap://ml/registry",
        "--root",
        str(world.root),
        "--lkg-dir",
        str(world.lkg),
        "--poll-interval",
        "3600",
        "--lkg-configmap",
        "ml/pointercache-lkg",
        "--report-to-pod",
        "--pod-name",
        "server-0",
        "--pod-namespace",
        "ml",
    ]
    sidecar = await asyncio.to_thread(Sidecar, env, args)
    try:
        await asyncio.to_thread(wait_until, lambda: sidecar.status()["ready"], 30)
        cluster.configmaps.put("ml", "registry", {f"{MODEL}.json": manifest(world, 2, "2")})
        await asyncio.to_thread(
            wait_until, lambda: sidecar.status()["current"]["version"] == "2", 30
        )
        key = ("ml", "pointercache-lkg")

        def lkg_revision() -> int:
            data = cluster.configmaps.objects[key]["data"][f"{MODEL}.alias-production.json"]
            return int(json.loads(data)["revision"])

        await asyncio.to_thread(wait_until, lambda: lkg_revision() == 2, 10)
        pod = cluster.handler.objects["v1/pods", "ml", "server-0"]
        await asyncio.to_thread(
            wait_until,
            lambda: pod["metadata"]["annotations"].get("pointercache.dev/version") == "2",
            10,
        )
        assert pod["metadata"]["annotations"]["pointercache.dev/source"] == "registry"

        def flip_events() -> list[dict[str, Any]]:
            events = [r.data for r in requests_to(cluster.handler, "POST", "/events")]
            return [e for e in events if e["reason"] == "ModelFlipped"]

        await asyncio.to_thread(
            wait_until, lambda: any("now serving 2" in e["message"] for e in flip_events()), 10
        )
        flipped = flip_events()[-1]
        assert flipped["involvedObject"]["name"] == "server-0"
        assert flipped["type"] == "Normal"
        assert cluster.configmaps.count("watch") >= 1
    finally:
        await asyncio.to_thread(sidecar.stop, signal.SIGTERM)


async def test_a_bogus_revision_is_refused_visibly_then_reset_after_the_grace(
    world: World, cli_env: dict[str, str], cluster: Cluster
) -> None:
    """After a registry answered 2**63-1 once, its healthy answer is refused with a StaleAnswer
    Event for --stale-grace, then accepted with a RevisionReset Event and a lower cluster LKG."""
    bogus = 2**63 - 1
    cluster.configmaps.put("ml", "registry", {f"{MODEL}.json": manifest(world, bogus, "1")})
    env = cli_env | {"KUBECONFIG": str(cluster.kubeconfig)}
    args = [
        *("--model", MODEL, "--registry", "configmap://ml/registry"),
        *("--root", str(world.root), "--lkg-dir", str(world.lkg)),
        *("--poll-interval", "3600", "--stale-grace", "2"),
        *("--lkg-configmap", "ml/pointercache-lkg", "--report-to-pod"),
        *("--pod-name", "server-0", "--pod-namespace", "ml"),
    ]
    key = ("ml", "pointercache-lkg")

    def lkg_revision() -> int:
        data = cluster.configmaps.objects[key]["data"][f"{MODEL}.alias-production.json"]
        return int(json.loads(data)["revision"])

    def events(reason: str) -> list[dict[str, Any]]:
        posted = [r.data for r in requests_to(cluster.handler, "POST", "/events")]
        return [e for e in posted if e["reason"] == reason]

    sidecar = await asyncio.to_thread(Sidecar, env, args)
    try:
        await asyncio.to_thread(wait_until, lambda: lkg_revision() == bogus, 30)
        cluster.configmaps.put("ml", "registry", {f"{MODEL}.json": manifest(world, 18, "2")})
        await asyncio.to_thread(wait_until, lambda: events("StaleAnswer"), 30)
        stale = events("StaleAnswer")[-1]
        assert stale["type"] == "Warning"
        assert "revision 18" in stale["message"] and str(bogus) in stale["message"]
        refused = sidecar.status()["refused"]
        assert (refused["version"], refused["revision"]) == ("2", 18)
        assert sidecar.status()["current"]["version"] == "1"
        assert lkg_revision() == bogus

        def forced() -> str:
            code, body = sidecar.get("/refresh?wait=60", method="POST")
            outcome: str = json.loads(body)["outcome"]
            return outcome if code == 200 and outcome == "flipped" else ""

        await asyncio.to_thread(wait_until, forced, 20, 0.5)
        await asyncio.to_thread(wait_until, lambda: events("RevisionReset"), 10)
        assert events("RevisionReset")[-1]["type"] == "Warning"
        status = sidecar.status()
        assert (status["current"]["version"], status["current"]["revision"]) == ("2", 18)
        assert status["refused"] is None
        assert status["claim"]["revision"] == 18
        await asyncio.to_thread(wait_until, lambda: lkg_revision() == 18, 10)
        reset = sidecar.find("revision-reset")
        assert reset is not None and reset["level"] == "warning"
    finally:
        await asyncio.to_thread(sidecar.stop, signal.SIGTERM)
