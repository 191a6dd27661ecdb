"""Fixtures of the registry-source tests: real MLflow, moto and small aiohttp servers."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Iterator

import pytest

from pointercache.base.log import log
from tests.mlflow_server import mlflow, mlflow_outage, mlflow_server  # noqa: F401
from tests.servers import moto_env, moto_server, private_moto  # noqa: F401


@pytest.fixture
async def black_hole() -> AsyncIterator[str]:
    """A TCP server on loopback that accepts, reads, and never answers: its host:port."""
    writers: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        while await reader.read(65536):
            pass

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"127.0.0.1:{port}"
    finally:
        for writer in writers:
            writer.close()
        server.close()
        await server.wait_closed()


@pytest.fixture
def captured_log() -> Iterator[io.StringIO]:
    """Everything pointercache logs during the test, at debug level."""
    with log.captured("debug") as stream:
        yield stream
