"""Shared fixtures. Topic folders (tests/<topic>/conftest.py) hold their own."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

pytest_plugins = ["tests.servers", "tests.mlflow_server", "tests.kube_api"]
"""Real servers shared by topic folders: moto's S3 server, an MLflow tracking server, and the
Kubernetes API (kmock)."""

REPO = Path(__file__).resolve().parent.parent
SLOW_TIMEOUT = 600
"""Seconds a test marked ``slow`` may take (the default, from pyproject, is much shorter)."""
SERVER_FIXTURES = frozenset({"mlflow_server", "mlflow_s3_server", "moto_server", "image_env"})
"""Session fixtures whose start-up (a server, the image's virtualenv: up to a minute or more on a
loaded machine) may fall in the first test of a worker that uses them: such tests get
``SLOW_TIMEOUT`` too."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Give ``slow`` tests, and tests that may start a shared server, the longer timeout."""
    for item in items:
        if item.get_closest_marker("timeout"):
            continue
        fixtures = set(getattr(item, "fixturenames", ()))
        if item.get_closest_marker("slow") or fixtures & SERVER_FIXTURES:
            item.add_marker(pytest.mark.timeout(SLOW_TIMEOUT))


VENV_BIN = Path(sys.executable).parent


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    """An environment for CLI subprocesses: no stray POINTERCACHE_* settings, our venv first."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("POINTERCACHE_")}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    env["HOME"] = str(tmp_path)
    return env
