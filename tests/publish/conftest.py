"""Fixtures of the write-path tests: real MLflow, moto and kmock, and the CLI as a subprocess."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pointercache.publish.registrars import MemoryRegistrar, MemoryRegistry
from pointercache.resolve.sources import SourceOptions
from tests.helpers import cli
from tests.mlflow_server import mlflow, mlflow_outage, mlflow_server  # noqa: F401
from tests.servers import moto_env, moto_server, private_moto  # noqa: F401

DIGEST = "sha256:" + "ab" * 32


def run_cli(
    env: dict[str, str], *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``pointercache ARGS`` to completion and capture its output."""
    return subprocess.run(
        cli(*args), env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def publish_args(
    registry: str, outbox: Path, model: str, version: str, *extra: str, uri: str | None = None
) -> list[str]:
    """``publish`` flags for one version (JSON output)."""
    return [
        "publish",
        "--model", model,
        "--version", version,
        "--uri", uri or f"s3://models/{model}/{version}/",
        "--registry", registry,
        "--outbox", str(outbox),
        "--output", "json",
        *extra,
    ]  # fmt: skip


def publish(
    env: dict[str, str], registry: str, outbox: Path, model: str, version: str, *extra: str
) -> dict[str, Any]:
    """Run ``pointercache publish`` (exit 0 expected) and return its JSON answer."""
    proc = run_cli(env, *publish_args(registry, outbox, model, version, *extra))
    assert proc.returncode == 0, proc.stderr
    answer: dict[str, Any] = json.loads(proc.stdout)
    return answer


def listed(env: dict[str, str], outbox: Path) -> list[dict[str, Any]]:
    """``pointercache outbox list --output json``."""
    proc = run_cli(env, "outbox", "list", "--outbox", str(outbox), "--output", "json")
    assert proc.returncode == 0, proc.stderr
    entries: list[dict[str, Any]] = json.loads(proc.stdout)
    return entries


@pytest.fixture
def memory_registry() -> tuple[str, MemoryRegistry]:
    """A fresh in-memory registry: (its URI, its state); ``twin`` opens registrars on it."""
    return "memory://registry", MemoryRegistry()


def twin(registry: MemoryRegistry) -> Callable[[str, SourceOptions], MemoryRegistrar]:
    """A ``Drainer`` opener whose registrars all write to ``registry``."""
    return lambda uri, options: MemoryRegistrar(uri, options, registry=registry)
