"""A real MLflow tracking server on loopback, shared by topic folders.

Use it from a topic's conftest.py::

    from tests.mlflow_server import mlflow, mlflow_outage, mlflow_server  # noqa: F401

``mlflow_server`` is session-scoped: ``mlflow server`` with a sqlite backend and the artifact proxy
(``--serve-artifacts``), one worker, its background job runner disabled, in its own process group.
``mlflow_s3_server`` is a second one set up as production usually is: ``--no-serve-artifacts
--default-artifact-root s3://mlflow-s3/``; clients (the tests, pointercache) write and read the
artifacts in S3 themselves. The server never touches S3, so each xdist worker points its clients at
its own moto server, where the fixture ``mlflow_s3`` creates the bucket: the paths MLflow records
are the same in every worker's moto. Startup takes 15-20 s on a small machine (more under load), so
the xdist workers of one run *share* each server (coordinated with flock in the run's common temp
dir) and the last worker to finish stops it. No worker holds a ``Popen`` for it: a wrapper shell
starts it in the background and exits at once, so any worker can stop or restart it by its process
group. Tests take the function-scoped ``mlflow`` fixture; a test that stops the server (``stop()``
ends the group: SIGTERM, then SIGKILL) takes ``mlflow_outage`` instead, which holds the other
workers' MLflow tests back meanwhile; the next test restarts it (``start()``: same port, same
database).
Give every test its own model name (``server.new_model()``).
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.servers import free_port

if TYPE_CHECKING:
    from collections.abc import Iterator

MLFLOW_BIN = Path(sys.executable).parent / "mlflow"
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_BACKGROUND = '"$@" &'
"""``sh -c`` script: run the arguments in the background and exit, leaving them in its group."""


def _group_alive(pgid: int) -> bool:
    """True if a process of group ``pgid`` runs (zombies waiting for init count as gone)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # exited meanwhile
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            return True
    return False


def _wait_gone(pgid: int, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for group ``pgid`` to end; True if it did."""
    deadline = time.monotonic() + timeout
    while _group_alive(pgid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def mlmodel_text(inputs: list[dict[str, Any]] | None, outputs: list[dict[str, Any]] | None) -> str:
    """An MLmodel file as MLflow writes it (PyYAML ``safe_dump``), with a column signature."""
    yaml = importlib.import_module("yaml")  # PyYAML comes with mlflow; no type stubs here

    doc: dict[str, Any] = {
        "artifact_path": "model",
        "flavors": {
            "python_function": {"loader_module": "mlflow.sklearn", "python_version": "3.11"}
        },
        "mlflow_version": "3.1.0",
    }
    if inputs is not None:
        doc["signature"] = {
            "inputs": json.dumps(inputs),
            "outputs": json.dumps(outputs) if outputs is not None else None,
            "params": None,
        }
    text: str = yaml.safe_dump(doc, default_flow_style=False)
    return text


class MlflowServer:
    """``mlflow server`` in its own session and process group, plus REST helpers.

    The process group id lives in ``<workdir>/server.json`` so every xdist worker sharing the
    server (see ``mlflow_server``) sees restarts done by another one. The server is an orphan
    (init reaps it), never a child of a worker: a ``Popen`` left in a worker for a server another
    worker stopped, or still serving another worker, would warn at interpreter exit.
    """

    def __init__(self, workdir: Path, port: int | None = None, *, s3_bucket: str = "") -> None:
        self.workdir = workdir
        self.s3_bucket = s3_bucket
        """With a bucket, artifacts go to ``s3://<bucket>/`` and the proxy is off."""
        self.state = workdir / "server.json"
        if port is None and self.state.exists():
            port = int(json.loads(self.state.read_text())["port"])
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.registry_uri = f"mlflow+http://127.0.0.1:{self.port}"
        self.db = workdir / "mlflow.db"
        self.shared: _Shared | None = None
        """Cross-worker coordination, set by the ``mlflow_server`` fixture."""

    # -- process ----------------------------------------------------------------------------

    @property
    def pgid(self) -> int | None:
        """Process group id of the server (started or running), if any."""
        if not self.state.exists():
            return None
        pgid = json.loads(self.state.read_text()).get("pgid")
        return pgid if isinstance(pgid, int) else None

    def _write_pgid(self, pgid: int | None) -> None:
        self.state.write_text(json.dumps({"port": self.port, "pgid": pgid}))

    def start(self, timeout: float = 180.0) -> None:
        """Start (or restart, same port and database) and wait until ``/health`` answers."""
        if self.running:
            return
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        env.update(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false", HOME=str(self.workdir))
        artifacts = [
            "--artifacts-destination",
            str(self.workdir / "artifacts"),
            "--serve-artifacts",
        ]
        if self.s3_bucket:
            artifacts = [
                "--default-artifact-root",
                f"s3://{self.s3_bucket}/",
                "--no-serve-artifacts",
            ]
        cmd = [
            str(MLFLOW_BIN), "server",
            "--backend-store-uri", f"sqlite:///{self.db}", *artifacts,
            "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
        ]  # fmt: skip
        with (self.workdir / "server.log").open("ab") as out:
            # The wrapper's pid is the new session's and process group's id; the server keeps
            # that group alive (so the id is not reused) after the wrapper is reaped here.
            wrapper = subprocess.Popen(
                ["/bin/sh", "-c", _BACKGROUND, "sh", *cmd], cwd=self.workdir, env=env,
                stdout=out, stderr=out, stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
            if wrapper.wait() != 0:
                raise RuntimeError(f"mlflow server wrapper exited with {wrapper.returncode}")
        pgid = wrapper.pid
        self._write_pgid(pgid)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not _group_alive(pgid):
                self._write_pgid(None)
                raise RuntimeError(f"mlflow server exited; see {self.workdir / 'server.log'}")
            with (
                contextlib.suppress(OSError),
                _OPENER.open(f"{self.url}/health", timeout=2.0) as response,
            ):
                if response.status == 200:
                    return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"mlflow server on port {self.port} not healthy in {timeout}s")

    def stop(self, grace: float = 5.0) -> None:
        """End the whole process group: SIGTERM, then SIGKILL after ``grace`` seconds."""
        pgid = self.pgid
        if pgid is None:
            return
        self._write_pgid(None)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        if not _wait_gone(pgid, grace):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)  # helpers that ignored SIGTERM
            if not _wait_gone(pgid, 10.0):
                raise RuntimeError(f"mlflow server group {pgid} survived SIGKILL")

    @property
    def running(self) -> bool:
        """True while the server process is alive."""
        pgid = self.pgid
        return pgid is not None and _group_alive(pgid)

    # -- REST helpers -------------------------------------------------------------------------

    def call(self, method: str, endpoint: str, body: dict[str, Any] | None = None) -> Any:
        """Call ``/api/2.0/mlflow/<endpoint>`` and return the decoded JSON answer."""
        url = f"{self.url}/api/2.0/mlflow/{endpoint}"
        data = None
        if method == "GET" and body:
            url += "?" + urllib.parse.urlencode(body)
        elif body is not None:
            data = json.dumps(body).encode()
        request = urllib.request.Request(
            url, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with _OPENER.open(request, timeout=30) as response:
            raw = response.read()
        return json.loads(raw or b"{}")

    def upload(self, path: str, data: bytes) -> None:
        """PUT one file through the artifact proxy (``path`` relative to the proxy root)."""
        url = f"{self.url}/api/2.0/mlflow-artifacts/artifacts/{urllib.parse.quote(path)}"
        request = urllib.request.Request(url, data=data, method="PUT")
        with _OPENER.open(request, timeout=30):
            pass

    def new_model(self, prefix: str = "m") -> str:
        """Create a registered model with a unique name and return the name."""
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        self.call("POST", "registered-models/create", {"name": name})
        return name

    def new_run(self) -> tuple[str, str]:
        """Create a run in the default experiment: (run_id, artifact path under the proxy)."""
        run = self.call("POST", "runs/create", {"experiment_id": "0"})["run"]["info"]
        return run["run_id"], run["artifact_uri"].removeprefix("mlflow-artifacts:/").lstrip("/")

    def create_version(
        self,
        model: str,
        files: dict[str, bytes] | None = None,
        *,
        inputs: list[dict[str, Any]] | None = None,
        source: str | None = None,
    ) -> str:
        """Upload ``files`` (plus an MLmodel with ``inputs``) to a new run and register them.

        The version's source is ``mlflow-artifacts:/<run path>/model`` unless ``source`` is given
        (``"runs"`` for ``runs:/<run_id>/model``, or any literal location; a ``models:/``
        source registers a copy of that version and uploads nothing).
        """
        if source is not None and source.startswith("models:/"):  # copies another version
            body = {"name": model, "source": source}
            return str(self.call("POST", "model-versions/create", body)["model_version"]["version"])
        run_id, root = self.new_run()
        all_files = dict(files or {})
        all_files.setdefault("MLmodel", mlmodel_text(inputs, [{"type": "double"}]).encode())
        for rel, data in all_files.items():
            self.upload(f"{root}/model/{rel}", data)
        location = f"mlflow-artifacts:/{root}/model"
        if source == "runs":
            location = f"runs:/{run_id}/model"
        elif source is not None:
            location = source
        body = {"name": model, "source": location, "run_id": run_id}
        return str(self.call("POST", "model-versions/create", body)["model_version"]["version"])

    def set_alias(self, model: str, alias: str, version: str) -> None:
        """Point ``alias`` of ``model`` at ``version``."""
        body = {"name": model, "alias": alias, "version": version}
        self.call("POST", "registered-models/alias", body)

    def set_version_tag(self, model: str, version: str, key: str, value: str) -> None:
        """Set a model-version tag (``pointercache.digest``...)."""
        body = {"name": model, "version": version, "key": key, "value": value}
        self.call("POST", "model-versions/set-tag", body)

    def set_model_tag(self, model: str, key: str, value: str) -> None:
        """Set a registered-model tag (``pointercache.revision``...)."""
        self.call("POST", "registered-models/set-tag", {"name": model, "key": key, "value": value})

    def transition(self, model: str, version: str, stage: str) -> None:
        """Move ``version`` to the (deprecated) ``stage``."""
        body = {"name": model, "version": version, "stage": stage}
        self.call(
            "POST", "model-versions/transition-stage", {**body, "archive_existing_versions": False}
        )

    def set_status(self, model: str, version: str, status: str) -> None:
        """Force a version's registration status in the database (no REST call can)."""
        with contextlib.closing(sqlite3.connect(self.db)) as db, db:
            db.execute(
                "UPDATE model_versions SET status = ? WHERE name = ? AND version = ?",
                (status, model, int(version)),
            )


class _Shared:
    """Coordinates the xdist workers of one run around one server (flock on shared files).

    ``session.lock`` guards the user count; ``inuse.lock`` is held shared by each test using
    the server and exclusively by an outage test, so stopping it never breaks another worker's
    test. A stopped server is restarted by the next test that needs it.
    """

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.users = root / "users"

    @contextlib.contextmanager
    def locked(self, name: str, mode: int) -> Iterator[None]:
        fd = os.open(self.root / name, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, mode)
            yield
        finally:
            os.close(fd)

    def add_user(self, delta: int) -> int:
        count = int(self.users.read_text()) if self.users.exists() else 0
        count += delta
        self.users.write_text(str(count))
        return count


def _shared_root(factory: pytest.TempPathFactory, name: str = "mlflow-shared") -> Path:
    base = factory.getbasetemp()
    # Under xdist every worker has its own basetemp inside the run's common one.
    return (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / name


def _shared_server(shared: _Shared, server: MlflowServer) -> Iterator[MlflowServer]:
    """Count this worker in, start the server if needed, and stop it after the last worker."""
    server.shared = shared
    with shared.locked("session.lock", fcntl.LOCK_EX):
        shared.add_user(+1)
    try:
        with shared.locked("inuse.lock", fcntl.LOCK_EX):
            server.start()
        yield server
    finally:
        with shared.locked("session.lock", fcntl.LOCK_EX):
            if shared.add_user(-1) == 0:
                server.stop()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """One MLflow server per test run, shared by the xdist workers; stopped by the last one."""
    shared = _Shared(_shared_root(tmp_path_factory))
    yield from _shared_server(shared, MlflowServer(shared.root))


S3_BUCKET = "mlflow-s3"
"""The artifact root bucket of ``mlflow_s3_server`` (created in each worker's moto server)."""


@pytest.fixture(scope="session")
def mlflow_s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """One ``--no-serve-artifacts --default-artifact-root s3://mlflow-s3/`` server per run."""
    shared = _Shared(_shared_root(tmp_path_factory, "mlflow-s3-shared"))
    yield from _shared_server(shared, MlflowServer(shared.root, s3_bucket=S3_BUCKET))


@pytest.fixture
def mlflow_s3(mlflow_s3_server: MlflowServer, moto_server: Any) -> MlflowServer:
    """The S3-backed server for one test, its bucket present in this worker's moto server."""
    client = moto_server.client()
    with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
        client.create_bucket(Bucket=S3_BUCKET)
    return mlflow_s3_server


@pytest.fixture
def mlflow(mlflow_server: MlflowServer) -> Iterator[MlflowServer]:
    """The shared server for one test (restarted first if an outage test stopped it)."""
    shared = mlflow_server.shared
    assert shared is not None
    while True:
        with shared.locked("inuse.lock", fcntl.LOCK_SH):
            if mlflow_server.running:
                yield mlflow_server
                return
        with shared.locked("inuse.lock", fcntl.LOCK_EX):
            mlflow_server.start()


@pytest.fixture
def mlflow_outage(mlflow_server: MlflowServer) -> Iterator[MlflowServer]:
    """The shared server for a test that may stop it: other workers' MLflow tests wait."""
    shared = mlflow_server.shared
    assert shared is not None
    with shared.locked("inuse.lock", fcntl.LOCK_EX):
        mlflow_server.start()
        yield mlflow_server
