"""Real servers on loopback shared by topic folders: moto's standalone S3 server.

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
