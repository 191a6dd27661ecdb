"""Shared fixtures. Topic folders (tests/<topic>/conftest.py) hold their own."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

pytest_plugins = ["tests.servers", "tests.mlflow_server"]
"""Real servers shared by topic folders: moto's S3 server and an MLflow tracking server."""

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    """An environment for CLI subprocesses: no stray POINTERCACHE_* settings, our venv first."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("POINTERCACHE_")}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    env["HOME"] = str(tmp_path)
    return env
