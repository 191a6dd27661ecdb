"""Fixtures for the Kubernetes tests: kmock on loopback and real kubernetes clients."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator

import kmock
import pytest

from pointercache.adapters.kube.client import KubeClient, KubeConfig
from tests.kube.apiserver import ConfigMapApi


@pytest.fixture
async def cmapi() -> AsyncIterator[ConfigMapApi]:
    """ConfigMaps with resourceVersions and watch resume, served by kmock on 127.0.0.1."""
    async with kmock.KubernetesScaffold() as handler, kmock.Server(handler) as server:
        api = ConfigMapApi(handler, str(server.url).rstrip("/"))
        yield api
        api.disconnect_watches()
        await asyncio.sleep(0)


@pytest.fixture
def make_client() -> Iterator[Callable[[str], KubeClient]]:
    """Build real kubernetes clients for a kmock URL; all are closed at the end."""
    clients: list[KubeClient] = []

    def make(url: str) -> KubeClient:
        client = KubeClient(KubeConfig(host=url, request_timeout=5.0))
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def kmock_url(handler: kmock.RawHandler) -> str:
    """The base URL of a kmock handler's server, without the trailing slash."""
    return str(handler.url).rstrip("/")


async def eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait until ``check()`` is true (a bound on waiting, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)
