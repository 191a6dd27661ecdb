"""Fixtures for the image tests: a virtualenv built the Dockerfile's way, the example server.

The image cannot be built here (no container daemon in CI), so the tests rebuild what it holds:
a virtualenv with requirements/runtime.txt, then the project copied like the Dockerfile's COPY
lines and installed non-editable with --no-deps, byte code compiled. The commands then run as
UID 10001 (when the tests run as root) with HOME in a scratch directory and the virtualenv
read-only, as under `readOnlyRootFilesystem`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from pointercache.base.clock import utcnow
from pointercache.model.pointer import Pointer
from pointercache.volume.store import Store
from tests.conftest import REPO, VENV_BIN
from tests.helpers import make_pointer

IMAGE_UID = 10001
PREFIX = "pointercache-image-"
PROJECT_FILES = (
    "pyproject.toml",
    "README.md",
    "pointercache",
    "initcontainer",
    "sidecar",
    "pointercache_cli",
)
"""What the Dockerfile copies into the builder (keep in sync with its COPY lines)."""


def _interpreter() -> str:
    """A Python 3.11 that UID 10001 can execute (the dev one may live under /root)."""
    if os.geteuid() != 0:
        return sys._base_executable  # type: ignore[attr-defined]
    for candidate in ("/usr/local/bin/python3.11", "/usr/bin/python3.11"):
        if Path(candidate).exists():
            return candidate
    pytest.fail("no system python3.11 that UID 10001 can run (/usr/local/bin or /usr/bin)")


def _shared_parent() -> Path:
    """Where the image virtualenv is built: tmpfs if any (creating and deleting 200 MB there takes
    a fraction of the disk's time), else the temp dir. UID 10001 must be able to traverse it."""
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())


def _remove(base: Path) -> None:
    subprocess.run(["chmod", "-R", "u+w", str(base)], check=False, capture_output=True)
    shutil.rmtree(base, ignore_errors=True)


def _remove_stale(parent: Path, keep: str) -> None:
    """Delete image virtualenvs of earlier runs (their lock is no longer held by anyone)."""
    for lock_path in parent.glob(f"{PREFIX}*.lock"):
        if lock_path.name == f"{keep}.lock":
            continue
        fd = os.open(lock_path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # a concurrent run is using it
        finally:
            os.close(fd)
        _remove(parent / lock_path.name.removesuffix(".lock"))
        lock_path.unlink(missing_ok=True)


@dataclass(frozen=True)
class ImageEnv:
    """The rebuilt image: its virtualenv and how to run a command inside it."""

    venv: Path
    base: Path

    def scratch(self, name: str) -> Path:
        """A directory the image user may write (a volume or the /tmp emptyDir in a pod)."""
        path = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.base))
        path.chmod(0o755)
        if os.geteuid() == 0:
            os.chown(path, IMAGE_UID, IMAGE_UID)
        return path

    def command(self, *argv: str) -> list[str]:
        """``argv`` run as the image's user (setpriv when the tests run as root)."""
        if os.geteuid() == 0:
            drop = [f"--reuid={IMAGE_UID}", f"--regid={IMAGE_UID}", "--clear-groups"]
            return ["setpriv", *drop, *argv]
        return list(argv)

    def env(self, home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The image's environment (Dockerfile ENV) with HOME in a scratch directory."""
        return {
            "PATH": f"{self.venv / 'bin'}:/usr/bin:/bin",
            "HOME": str(home),
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONUNBUFFERED": "1",
            **(extra or {}),
        }


def _uv(*args: str) -> None:
    env = {**os.environ, "UV_COMPILE_BYTECODE": "1", "UV_LINK_MODE": "copy"}
    proc = subprocess.run(
        [str(VENV_BIN / "uv"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(f"uv {' '.join(args)} failed:\n{proc.stderr}")


def _build(base: Path) -> Path:
    """Build the image's virtualenv in ``base`` the way the Dockerfile's builder stage does."""
    venv, context = base / "venv", base / "context"
    subprocess.run([_interpreter(), "-m", "venv", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    _uv(
        "pip",
        "install",
        "--quiet",
        "--python",
        python,
        "-r",
        str(REPO / "requirements" / "runtime.txt"),
    )
    context.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in PROJECT_FILES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, context / name, ignore=ignore)
        else:
            shutil.copy2(src, context / name)
    _uv("pip", "install", "--quiet", "--python", python, "--no-deps", str(context))
    subprocess.run(["chmod", "-R", "a-w", str(venv)], check=True)
    return venv


@pytest.fixture(scope="session")
def image_env(testrun_uid: str) -> Iterator[ImageEnv]:
    """The image's virtualenv, read-only, built once per test run and shared by the workers.

    The first worker builds it under an exclusive lock; every worker then holds the lock shared
    while it uses it, and the last one to leave deletes it.
    """
    parent = _shared_parent()
    name = f"{PREFIX}{testrun_uid}"
    _remove_stale(parent, keep=name)
    base, lock_path = parent / name, parent / f"{name}.lock"
    fd = os.open(lock_path, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if not (base / "ready").exists():
            _remove(base)
            base.mkdir(mode=0o755)
            base.chmod(0o755)
            _build(base)
            (base / "ready").touch()
        fcntl.flock(fd, fcntl.LOCK_SH)
        yield ImageEnv(venv=base / "venv", base=base)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # another worker still uses it and deletes it when done
        _remove(base)
        lock_path.unlink(missing_ok=True)
    finally:
        os.close(fd)


# --- publishing models into a store and talking to the example server -----------------------


def linear_model(weights: dict[str, float], bias: float) -> bytes:
    """The example server's model file."""
    return orjson.dumps({"kind": "linear", "weights": weights, "bias": bias})


def publish(root: Path, version: str, data: bytes, *, model: str = "demo") -> Pointer:
    """Install and publish one single-file version in the store at ``root``, as the sidecar does."""
    store = Store(root)
    store.ensure_layout()
    pointer = make_pointer(
        model=model,
        version=version,
        uri=f"file:///models/{model}/{version}.json",
        digest="sha256:" + hashlib.sha256(data).hexdigest(),
        size_bytes=len(data),
        revision=int(version) if version.isdigit() else 0,
        registry_seen_at=utcnow(),
    )
    with store.lock(timeout=10):
        staging = store.new_staging_dir()
        (staging / "model").write_bytes(data)
        store.publish(store.install(staging / "model", pointer))
    return pointer


def _body(data: bytes) -> dict[str, Any]:
    """A JSON object body, or ``{"text": ...}`` for plain-text answers (like /readyz)."""
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError:
        return {"text": data.decode(errors="replace")}
    return parsed if isinstance(parsed, dict) else {"value": parsed}


class ServerProcess:
    """A server subprocess on 127.0.0.1 (port 0, read from its "listening" log line)."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str]) -> None:
        self.proc = subprocess.Popen(
            argv,
            env=dict(env),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self._drainer = threading.Thread(target=self._drain, daemon=True)
        self._drainer.start()
        try:
            self.port = self._listening_port()
        except BaseException:
            self.stop()
            raise

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            with contextlib.suppress(orjson.JSONDecodeError):
                self.lines.put(orjson.loads(raw))

    def _listening_port(self) -> int:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                if self.proc.poll() is not None:
                    pytest.fail(f"model server exited with {self.proc.returncode}")
                continue
            if line.get("event") == "listening":
                return int(line["port"])
        pytest.fail("model server did not log 'listening' within 30 s")

    def get(self, path: str) -> tuple[int, dict[str, Any]]:
        """GET ``path``; return the status and the JSON body."""
        return self._request(urllib.request.Request(self.url(path)))

    def post(self, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
        """POST ``body`` to ``path``; return the status and the JSON body."""
        request = urllib.request.Request(
            self.url(path), data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        return self._request(request)

    def url(self, path: str) -> str:
        """The server's URL for ``path``."""
        return f"http://127.0.0.1:{self.port}{path}"

    @staticmethod
    def _request(request: urllib.request.Request) -> tuple[int, dict[str, Any]]:
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, _body(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, _body(exc.read())

    def wait_for(self, path: str, predicate: Any, timeout: float = 30.0) -> dict[str, Any]:
        """Poll ``path`` until ``predicate(status, body)`` holds; fail after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        status, body = self.get(path)
        while not predicate(status, body):
            if time.monotonic() > deadline:
                pytest.fail(f"{path}: still {status} {body} after {timeout} s")
            time.sleep(0.05)
            status, body = self.get(path)
        return body

    def stop(self) -> int:
        """SIGTERM, then wait; return the exit code."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()
        self._drainer.join(timeout=5)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        return self.proc.returncode


@pytest.fixture
def start_server() -> Iterator[Any]:
    """Start example model servers; every one is stopped at the end of the test."""
    started: list[ServerProcess] = []

    def _start(argv: Sequence[str], env: Mapping[str, str]) -> ServerProcess:
        server = ServerProcess(argv, env)
        started.append(server)
        return server

    yield _start
    for server in started:
        server.stop()
