"""Real servers on loopback shared by topic folders: moto's standalone S3 server, and a proxy
in front of it that trickles object bodies (``TricklingS3``).

Use it from a topic's conftest.py::

    from tests.servers import moto_server, moto_env  # noqa: F401  (re-exported fixtures)

``moto_server`` is session-scoped (one server per xdist worker); give every test its own bucket
(``moto_server.new_bucket()``). ``stop()`` SIGKILLs the server's process group to simulate an
outage and ``start()`` brings it back on the same port — *empty*, since moto keeps its state in
memory. Tests that stop the server should use a private ``MotoServer`` (see ``private_moto``)
so other tests in the same worker keep their buckets.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.helpers import free_port

if TYPE_CHECKING:
    from collections.abc import Iterator

MOTO_BIN = Path(sys.executable).parent / "moto_server"
CREDS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class MotoServer:
    """moto's standalone S3 server as a subprocess in its own process group."""

    def __init__(self, port: int | None = None, log_path: Path | None = None) -> None:
        self.port = port or free_port()
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        self._log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> None:
        """Start (or restart, on the same port) and wait until it answers HTTP."""
        if self._proc is not None and self._proc.poll() is None:
            return
        out = self._log_path.open("ab") if self._log_path else subprocess.DEVNULL
        try:
            self._proc = subprocess.Popen(
                [str(MOTO_BIN), "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=out,
                stderr=out,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            if not isinstance(out, int):
                out.close()
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise RuntimeError(f"moto_server exited with {self._proc.returncode}")
            try:
                with opener.open(f"{self.endpoint_url}/moto-api/", timeout=1.0):
                    return
            except urllib.error.HTTPError:
                return  # it answers HTTP: ready
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"moto_server on port {self.port} did not answer in {timeout}s")

    def stop(self) -> None:
        """SIGKILL the whole process group (an outage, not a graceful shutdown)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    @property
    def running(self) -> bool:
        """True while the server process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def env(self) -> dict[str, str]:
        """Environment for boto3 (in-process or a subprocess) to talk to this server."""
        return {**CREDS, "AWS_ENDPOINT_URL": self.endpoint_url}

    def client(self) -> Any:
        """A boto3 S3 client for arranging test data (dummy credentials, us-east-1)."""
        import boto3.session

        session = boto3.session.Session(
            aws_access_key_id=CREDS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDS["AWS_SECRET_ACCESS_KEY"],
            region_name=CREDS["AWS_DEFAULT_REGION"],
        )
        return session.client("s3", endpoint_url=self.endpoint_url)

    def new_bucket(self, prefix: str = "t") -> str:
        """Create a bucket with a unique name and return the name."""
        name = f"{prefix}-{uuid.uuid4().hex[:16]}"
        self.client().create_bucket(Bucket=name)
        return name


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """One moto S3 server per test session (per xdist worker); killed as a group at the end."""
    log_path = tmp_path_factory.mktemp("moto") / "moto.log"
    server = MotoServer(log_path=log_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def private_moto(tmp_path: Path) -> Iterator[MotoServer]:
    """A moto server of this test alone, for outage tests that stop and start it."""
    server = MotoServer(log_path=tmp_path / "moto.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def moto_env(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> MotoServer:
    """Point boto3 in this process at the shared moto server through the standard AWS_* env."""
    for name, value in moto_server.env().items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    return moto_server


class TricklingS3:
    """A proxy in front of moto's server that trickles the bodies of object GETs.

    Every request is forwarded (method, path, query, headers, body); an object GET answers with
    moto's status and headers, 1 KiB of the body, then a byte every ``every`` seconds.
    Listings, HEADs and writes pass through untouched. ``disconnects`` records when each
    trickling response found its client gone (a server-side witness that the reader stopped).
    """

    def __init__(self, upstream: str, every: float = 0.2) -> None:
        self.upstream = upstream.rstrip("/")
        self.every = every
        self.trickled = 0
        self.disconnects: list[float] = []
        self.port = 0
        self._runner: Any = None
        self._session: Any = None

    @property
    def endpoint_url(self) -> str:
        """Where boto3 should send its requests."""
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> TricklingS3:
        """Listen on a free loopback port."""
        import aiohttp
        from aiohttp import web

        self._session = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application(client_max_size=64 << 20)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        self.port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        """Close the listener and the upstream session."""
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _handle(self, request: Any) -> Any:
        import asyncio

        from aiohttp import web

        hop = {"host", "content-length", "transfer-encoding", "connection"}
        headers = {k: v for k, v in request.headers.items() if k.lower() not in hop}
        body = await request.read()
        url = f"{self.upstream}{request.path_qs}"
        async with self._session.request(
            request.method, url, headers=headers, data=body, allow_redirects=False
        ) as upstream:
            data = await upstream.read()
            out = {k: v for k, v in upstream.headers.items() if k.lower() not in hop}
        is_object_get = request.method == "GET" and "list-type" not in request.query
        if request.method == "HEAD":
            length = upstream.headers.get("Content-Length", "0")
            return web.Response(status=upstream.status, headers={**out, "Content-Length": length})
        if not is_object_get or upstream.status >= 300 or request.path.count("/") < 2:
            return web.Response(status=upstream.status, body=data, headers=out)
        self.trickled += 1
        resp = web.StreamResponse(status=upstream.status, headers=out)
        resp.content_length = len(data)
        await resp.prepare(request)
        try:
            await resp.write(data[:1024])
            for index in range(1024, len(data)):
                await asyncio.sleep(self.every)
                await resp.write(data[index : index + 1])
        except ConnectionResetError:
            self.disconnects.append(time.monotonic())
        return resp
