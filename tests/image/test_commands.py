"""The commands the image runs work from a virtualenv built the Dockerfile's way, read-only.

They run as UID 10001 (when the tests run as root) with HOME in a scratch directory and the
virtualenv unwritable, as in a pod with readOnlyRootFilesystem and a /tmp emptyDir.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.conftest import REPO
from tests.image.conftest import ImageEnv, linear_model

pytestmark = pytest.mark.xdist_group(name="image-venv")


def run(image_env: ImageEnv, *argv: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run a command of the image as its user; never let it hang the suite."""
    return subprocess.run(
        image_env.command(*argv), env=env, capture_output=True, text=True, timeout=120, check=False
    )


def write_manifest(where: Path, data: bytes, *, model: str = "demo") -> Path:
    """A file:// manifest naming a file:// artifact (both readable by the image user)."""
    artifact = where / "model-1.json"
    artifact.write_bytes(data)
    manifest = where / "manifest.json"
    manifest.write_bytes(
        orjson.dumps(
            {
                "schema": 1,
                "model": model,
                "revision": 1,
                "aliases": {"production": "1"},
                "versions": {
                    "1": {
                        "uri": artifact.as_uri(),
                        "digest": "sha256:" + hashlib.sha256(data).hexdigest(),
                        "size_bytes": len(data),
                    }
                },
            }
        )
    )
    return manifest


def test_virtualenv_is_read_only(image_env: ImageEnv) -> None:
    """The installed package directory cannot be written by the image user."""
    site = next(image_env.venv.glob("lib/python3*/site-packages"))
    assert (site / "pointercache").is_dir()
    home = image_env.scratch("home")
    probe = run(
        image_env, "python", "-c", f"open({str(site / 'probe')!r}, 'w')", env=image_env.env(home)
    )
    assert probe.returncode != 0
    assert "PermissionError" in probe.stderr or "Read-only" in probe.stderr


def test_sidecar_help(image_env: ImageEnv) -> None:
    """`pointercache sidecar --help` exits 0 and lists the status server's --listen flag."""
    proc = run(
        image_env, "pointercache", "sidecar", "--help", env=image_env.env(image_env.scratch("home"))
    )
    assert proc.returncode == 0, proc.stderr
    assert "--listen" in proc.stdout and "POINTERCACHE_LISTEN" in proc.stdout


def test_init_publishes_from_a_file_manifest(image_env: ImageEnv) -> None:
    """`pointercache init` with a file:// manifest and artifact exits 0, writing only the volume."""
    home, volume, src = (image_env.scratch(n) for n in ("home", "volume", "registry"))
    data = linear_model({"a": 1.0}, 0.5)
    manifest = write_manifest(src, data)
    term = image_env.scratch("dev") / "termination-log"
    env = image_env.env(
        home,
        {
            "POINTERCACHE_MODEL": "demo",
            "POINTERCACHE_REGISTRY": manifest.as_uri(),
            "POINTERCACHE_ROOT": str(volume),
            "POINTERCACHE_TERMINATION_LOG": str(term),
        },
    )
    proc = run(image_env, "pointercache", "init", env=env)
    assert proc.returncode == 0, proc.stderr
    pointer = orjson.loads((volume / "pointer.json").read_bytes())
    assert (pointer["model"], pointer["version"], pointer["source"]) == ("demo", "1", "registry")
    assert pointer["digest"] == "sha256:" + hashlib.sha256(data).hexdigest()
    assert (volume / "model").read_bytes() == data
    assert list(home.iterdir()) == []  # nothing written to HOME: only the volume changed
    assert not term.exists()


def test_init_without_any_source_fails_with_one_line(image_env: ImageEnv) -> None:
    """Without registry, LKG or pinned version, init exits 1 with a one-line reason."""
    home, volume = image_env.scratch("home"), image_env.scratch("volume")
    term = home / "termination-log"
    env = image_env.env(
        home,
        {
            "POINTERCACHE_MODEL": "demo",
            "POINTERCACHE_ROOT": str(volume),
            "POINTERCACHE_TERMINATION_LOG": str(term),
        },
    )
    proc = run(image_env, "pointercache", "init", env=env)
    assert proc.returncode == 1, proc.stderr
    reason = term.read_text()
    assert reason.count("\n") == 1 and "demo" in reason
    assert f"pointercache init: {reason.strip()}" in proc.stderr
    assert not (volume / "pointer.json").exists()


@pytest.fixture
def example_copy(image_env: ImageEnv) -> Path:
    """examples/model_server copied and byte-compiled as its Dockerfile does, then read-only."""
    dest = image_env.scratch("examples")
    if os.geteuid() == 0:
        os.chown(dest, 0, 0)
    shutil.copytree(
        REPO / "examples" / "model_server",
        dest / "model_server",
        ignore=shutil.ignore_patterns("__pycache__", "Dockerfile"),
    )
    python = image_env.venv / "bin" / "python"
    subprocess.run([str(python), "-m", "compileall", "-q", str(dest)], check=True)
    subprocess.run(["chmod", "-R", "a-w", str(dest)], check=True)
    return dest


def test_example_server_serves_what_init_published(
    image_env: ImageEnv, example_copy: Path, start_server: Any
) -> None:
    """The example server, run like its image, loads the model init published and serves it."""
    home, volume, src = (image_env.scratch(n) for n in ("home", "volume", "registry"))
    manifest = write_manifest(src, linear_model({"a": 2.0}, 1.0))
    init_env = image_env.env(
        home,
        {
            "POINTERCACHE_MODEL": "demo",
            "POINTERCACHE_REGISTRY": manifest.as_uri(),
            "POINTERCACHE_ROOT": str(volume),
            "POINTERCACHE_TERMINATION_LOG": str(home / "termination-log"),
        },
    )
    assert run(image_env, "pointercache", "init", env=init_env).returncode == 0
    env = image_env.env(home, {"PYTHONPATH": str(example_copy)})
    argv = image_env.command(
        "python", "-m", "model_server", f"--root={volume}", "--listen=127.0.0.1:0"
    )
    server = start_server(argv, env)
    server.wait_for("/health/ready", lambda status, _body: status == 200)
    status, body = server.post("/predict", b'{"features": {"a": 4}}')
    assert (status, body["prediction"], body["version"]) == (200, 9.0, "1")
    assert server.stop() == 0


def test_sidecar_serves_status_that_pointercache_status_reads(
    image_env: ImageEnv, start_server: Any
) -> None:
    """After init, the sidecar is ready on /readyz and `pointercache status` reports the version."""
    home, volume, src = (image_env.scratch(n) for n in ("home", "volume", "registry"))
    manifest = write_manifest(src, linear_model({"a": 1.0}, 0.0))
    settings = {
        "POINTERCACHE_MODEL": "demo",
        "POINTERCACHE_REGISTRY": manifest.as_uri(),
        "POINTERCACHE_ROOT": str(volume),
        "POD_NAME": "demo-0",
        "POD_NAMESPACE": "models",
    }
    init_env = image_env.env(home, {**settings, "POINTERCACHE_TERMINATION_LOG": str(home / "t")})
    assert run(image_env, "pointercache", "init", env=init_env).returncode == 0
    sidecar_env = image_env.env(home, {**settings, "POINTERCACHE_LISTEN": "127.0.0.1:0"})
    sidecar = start_server(image_env.command("pointercache", "sidecar"), sidecar_env)
    sidecar.wait_for("/readyz", lambda status, _body: status == 200)
    status = run(
        image_env, "pointercache", "status", "--url", sidecar.url(""), env=image_env.env(home)
    )
    assert status.returncode == 0, status.stderr
    rows = dict(line.split(None, 1) for line in status.stdout.splitlines() if " " in line)
    assert rows["model"].strip() == "demo"
    assert rows["version"].strip() == "1"
    assert rows["ready"].strip() == "yes"
    assert sidecar.stop() == 0
