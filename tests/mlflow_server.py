"""A real MLflow tracking server on loopback, shared by topic folders.

Use it from a topic's conftest.py::

    from tests.mlflow_server import mlflow_server, mlflow  # noqa: F401  (re-exported fixtures)

``mlflow_server`` is session-scoped: ``mlflow server`` with a sqlite backend and the artifact
proxy (``--serve-artifacts``), one worker, its background job runner disabled, in its own process
group. Startup takes 10-20 s on a small machine, so mark the tests that use it with
``pytest.mark.xdist_group("mlflow")``: the whole group then runs on one xdist worker and only one
server starts. ``stop()`` ends the group (SIGTERM, then SIGKILL) for outage tests; ``start()``
brings it back on the same port with the same database. The function-scoped ``mlflow`` fixture
restarts it if an earlier test left it stopped. Give every test its own model name
(``server.new_model()``).
"""

from __future__ import annotations

import contextlib
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


def mlmodel_text(inputs: list[dict[str, Any]] | None, outputs: list[dict[str, Any]] | None) -> str:
    """An MLmodel file as MLflow writes it (PyYAML ``safe_dump``), with a column signature."""
    import yaml

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
    """``mlflow server`` as a subprocess in its own process group, plus REST helpers."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.registry_uri = f"mlflow+http://127.0.0.1:{self.port}"
        self.db = workdir / "mlflow.db"
        self._proc: subprocess.Popen[bytes] | None = None

    # -- process ----------------------------------------------------------------------------

    def start(self, timeout: float = 90.0) -> None:
        """Start (or restart, same port and database) and wait until ``/health`` answers."""
        if self.running:
            return
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        env.update(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false", HOME=str(self.workdir))
        cmd = [
            str(MLFLOW_BIN), "server",
            "--backend-store-uri", f"sqlite:///{self.db}",
            "--artifacts-destination", str(self.workdir / "artifacts"),
            "--serve-artifacts",
            "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
        ]  # fmt: skip
        with (self.workdir / "server.log").open("ab") as out:
            self._proc = subprocess.Popen(
                cmd, cwd=self.workdir, env=env, stdout=out, stderr=out,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {self._proc.returncode}")
            with (
                contextlib.suppress(OSError),
                _OPENER.open(f"{self.url}/health", timeout=1.0) as response,
            ):
                if response.status == 200:
                    return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"mlflow server on port {self.port} not healthy in {timeout}s")

    def stop(self, grace: float = 5.0) -> None:
        """End the whole process group: SIGTERM, then SIGKILL after ``grace`` seconds."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # helpers that ignored SIGTERM
        proc.wait(timeout=10)

    @property
    def running(self) -> bool:
        """True while the server process is alive."""
        return self._proc is not None and self._proc.poll() is None

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
        (``"runs"`` for ``runs:/<run_id>/model``, or any literal location).
        """
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


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """One MLflow server per xdist worker that uses it; its process group is ended at the end."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def mlflow(mlflow_server: MlflowServer) -> MlflowServer:
    """The shared server, restarted first if an outage test left it stopped."""
    mlflow_server.start()
    return mlflow_server
