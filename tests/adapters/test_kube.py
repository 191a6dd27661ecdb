"""The Kubernetes adapter: configuration and error translation by status code."""

from __future__ import annotations

import asyncio
from pathlib import Path

import kmock as kmocklib
import pytest

from pointercache.adapters.kube.client import Gone, KubeClient, KubeConfig, status_error
from pointercache.errors import (
    ConfigError,
    KubeConflict,
    KubeError,
    KubeForbidden,
    KubeNotFound,
    KubeUnavailable,
    Transient,
)
from tests.kube_api import kmock_url, status


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (404, KubeNotFound),
        (409, KubeConflict),
        (410, Gone),
        (401, KubeForbidden),
        (403, KubeForbidden),
        (429, KubeUnavailable),
        (500, KubeUnavailable),
        (503, KubeUnavailable),
        (0, KubeUnavailable),
        (422, KubeError),
    ],
)
def test_status_codes_map_to_the_error_tree(code, kind):
    """Each HTTP status becomes its KubeError subclass; only 429, 5xx and 0 are Transient."""
    error = status_error(code, "x")
    assert type(error) is kind
    assert error.status == code
    assert isinstance(error, Transient) == (kind is KubeUnavailable)


@pytest.mark.parametrize(
    ("code", "kind"),
    [(500, KubeUnavailable), (403, KubeForbidden), (409, KubeConflict), (404, KubeNotFound)],
)
async def test_api_answers_are_translated(kmock, make_client, code, kind):
    """A real client call answered with an error status raises the matching KubeError."""
    kmock[kmock.resource("", "v1", "configmaps")] << kmocklib.Response(
        status=code, payload=status(code, "Nope", "no configmaps for you")
    )
    client = make_client(kmock_url(kmock))
    with pytest.raises(kind, match="no configmaps for you") as info:
        await asyncio.to_thread(client.get_configmap, "ml", "x")
    assert info.value.status == code


def test_environ_decides_in_cluster():
    """KUBERNETES_SERVICE_HOST in the passed environment means in-cluster configuration."""
    assert KubeConfig.from_environ({"KUBERNETES_SERVICE_HOST": "10.0.0.1"}).in_cluster
    assert not KubeConfig.from_environ({}).in_cluster


def test_in_cluster_outside_a_cluster_is_a_config_error():
    """Asking for in-cluster configuration without a service account is a ConfigError."""
    client = KubeClient(KubeConfig(in_cluster=True))
    with pytest.raises(ConfigError, match="kubernetes configuration"):
        client.get_configmap("ml", "x")


async def test_kubeconfig_file_is_used(kmock, make_client, tmp_path):
    """A kubeconfig file's server and context are what the client talks to."""
    kmock.objects["v1/configmaps", "ml", "x"] = {
        "metadata": {"name": "x", "namespace": "ml"},
        "data": {"a": "b"},
    }
    path = Path(tmp_path / "kubeconfig")
    path.write_text(f"""
apiVersion: v1
kind: Config
clusters: [{{name: c, cluster: {{server: "{kmock_url(kmock)}"}}}}]
users: [{{name: u, user: {{token: abc}}}}]
contexts: [{{name: dev, context: {{cluster: c, user: u}}}}]
current-context: dev
""")
    client = KubeClient(KubeConfig(kubeconfig=path, context="dev"))
    try:
        obj = await asyncio.to_thread(client.get_configmap, "ml", "x")
    finally:
        client.close()
    assert obj["data"] == {"a": "b"}
    assert next(iter(kmock)).headers["Authorization"] == "Bearer abc"


def test_missing_kubeconfig_is_a_config_error(tmp_path):
    """A kubeconfig path that does not exist is a ConfigError, not a crash."""
    client = KubeClient(KubeConfig(kubeconfig=tmp_path / "absent"))
    with pytest.raises(ConfigError):
        client.list_pods("ml")


async def test_an_answer_that_trickles_is_bounded_by_the_request_timeout() -> None:
    """An API server that trickles a ConfigMap a byte at a time: KubeUnavailable within the
    request timeout, and the connection is dropped (our own fake of the server)."""
    from aiohttp import web

    left: list[float] = []

    async def trickle(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        try:
            for byte in b'{"kind": "ConfigMap", "data": {}}' * 1000:
                await resp.write(bytes([byte]))
                await asyncio.sleep(0.05)
        except ConnectionResetError:
            left.append(asyncio.get_running_loop().time())
        return resp

    app = web.Application()
    app.router.add_get("/api/v1/namespaces/ns/configmaps/cm", trickle)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host = f"http://127.0.0.1:{runner.addresses[0][1]}"
    client = KubeClient(KubeConfig(host=host, request_timeout=1.0))
    loop = asyncio.get_running_loop()
    try:
        started = loop.time()
        with pytest.raises(KubeUnavailable, match="not complete within 1s"):
            await asyncio.to_thread(client.get_configmap, "ns", "cm")
        for _ in range(100):  # wait for the server to notice, at most 10 s
            if left:
                break
            await asyncio.sleep(0.1)
        assert left and left[0] - started < 10.0
    finally:
        await asyncio.to_thread(client.close)
        await runner.cleanup()
