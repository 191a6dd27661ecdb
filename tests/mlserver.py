"""A real MLServer (``make tools`` installs it into .tools/mlserver-venv) serving scikit-learn
models from a pointercache volume, for the loaded-version tests and benchmarks.

``train`` fits a ``LinearRegression`` (y = slope * x) in MLServer's own virtualenv and saves it
with joblib, as a model artifact directory. ``MLServer.start`` runs ``mlserver start`` on a
model repository whose ``model-settings.json`` points at ``<volume>/model/model.joblib``: the
stable link through ``current``, so the repository's ``load`` endpoint
(``POST /v2/repository/models/{name}/load``) reloads whatever version is published.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.helpers import free_port
from tests.tools import tool

TRAIN = """\
import sys
import joblib
import numpy as np
from sklearn.linear_model import LinearRegression

x = np.array([[0.0], [1.0], [2.0], [3.0]])
joblib.dump(LinearRegression().fit(x, float(sys.argv[2]) * x[:, 0]), sys.argv[1])
"""


def python() -> Path:
    """The interpreter of MLServer's virtualenv (it has scikit-learn and joblib)."""
    return Path(tool("mlserver")).resolve().parent / "python"


def train(directory: Path, slope: float) -> Path:
    """Write ``directory/model.joblib``, a model predicting ``slope * x``; return ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [str(python()), "-c", TRAIN, str(directory / "model.joblib"), str(slope)],
        check=True,
        timeout=120,
        capture_output=True,
    )
    return directory


@dataclass
class MLServer:
    """An ``mlserver start`` process on free loopback ports."""

    proc: subprocess.Popen[bytes]
    url: str
    name: str
    log: Path

    @classmethod
    def start(cls, base: Path, name: str, volume: Path, *, timeout: float = 180.0) -> MLServer:
        """Serve model ``name`` from ``volume/model/model.joblib``; wait until it is ready."""
        repo = base / "mlserver-repo"
        (repo / name).mkdir(parents=True, exist_ok=True)
        settings = {
            "name": name,
            "implementation": "mlserver_sklearn.SKLearnModel",
            "parameters": {"uri": str(volume / "model" / "model.joblib")},
        }
        (repo / name / "model-settings.json").write_text(json.dumps(settings))
        http = free_port()
        server = {
            "http_port": http,
            "grpc_port": free_port(),
            "metrics_port": free_port(),
            "parallel_workers": 0,
            "host": "127.0.0.1",
        }
        (repo / "settings.json").write_text(json.dumps(server))
        log = base / "mlserver.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLSERVER")}
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [tool("mlserver"), "start", str(repo)],
                cwd=repo,
                env=env | {"HOME": str(base)},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        started = cls(proc, f"http://127.0.0.1:{http}", name, log)
        started.wait_ready(timeout)
        return started

    def wait_ready(self, timeout: float) -> None:
        """Wait until the model answers ready (the process failing is an error at once)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"mlserver exited: {self.log.read_text()[-2000:]}")
            if self.request("GET", f"/v2/models/{self.name}/ready")[0] == 200:
                return
            time.sleep(0.2)
        raise AssertionError(f"mlserver not ready in {timeout}s: {self.log.read_text()[-2000:]}")

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """One request: (status, decoded JSON or None); (0, None) when nothing answers."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, None
        except (OSError, ValueError):
            return 0, None

    def predict(self, x: float) -> float:
        """The served model's prediction for one row ``[x]`` (V2 inference protocol)."""
        body = {"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP64", "data": [x]}]}
        status, answer = self.request("POST", f"/v2/models/{self.name}/infer", body)
        assert status == 200, (status, answer)
        return float(answer["outputs"][0]["data"][0])

    def stop(self) -> None:
        """SIGTERM the process group, SIGKILL if it lingers."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
