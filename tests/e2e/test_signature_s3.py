"""The signature gate when MLflow keeps artifacts in S3: real scikit-learn models, real MLflow
(``--no-serve-artifacts --default-artifact-root s3://…``), moto as the S3, the real CLI."""

from __future__ import annotations

import contextlib
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from pointercache.model.pointer import Pointer
from tests.e2e.helpers import Sidecar, run_init, wait_until
from tests.mlflow_server import S3_BUCKET, MlflowServer
from tests.servers import MotoServer
from tests.sklearn_models import log_models

SERVED = ["amount", "age"]
"""The columns the serving code produces (v1 was trained on exactly these)."""
WITH_GEO = [*SERVED, "geo_lat"]
"""v2 was trained with an extra column the serving code does not produce."""


@pytest.fixture(scope="module")
def registered(mlflow_s3_server: MlflowServer, moto_server: MotoServer) -> tuple[str, list[str]]:
    """A model with v1 (the served columns) and v2 (plus geo_lat), logged once for the module;
    each test points the production alias where it needs it."""
    client = moto_server.client()
    with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
        client.create_bucket(Bucket=S3_BUCKET)
    model = f"credit-{uuid.uuid4().hex[:8]}"
    versions = log_models(
        mlflow_s3_server.url, moto_server, {"model": model, "versions": [SERVED, WITH_GEO]}
    )
    return model, versions


def _expect(tmp_path: Path, columns: list[str]) -> Path:
    path = tmp_path / "expect.json"
    inputs = [{"name": c, "type": "double", "required": True} for c in columns]
    path.write_text(json.dumps({"inputs": inputs}))
    return path


def _env(cli_env: dict[str, str], moto: MotoServer) -> dict[str, str]:
    return cli_env | moto.env()


def _args(tmp_path: Path, server: MlflowServer, model: str, *extra: str) -> list[str]:
    return [
        "--model", model,
        "--registry", server.registry_uri,
        "--registry-timeout", "10",
        "--root", str(tmp_path / "pod"),
        "--lkg-dir", str(tmp_path / "node"),
        "--expect-signature", str(_expect(tmp_path, SERVED)),
        *extra,
    ]  # fmt: skip


def _staged_versions(lines: str) -> set[str]:
    """Versions whose artifact was downloaded (``staged`` log events)."""
    found = set()
    for line in lines.splitlines():
        try:
            record: dict[str, Any] = json.loads(line)
        except ValueError:
            continue
        if record.get("event") == "staged":
            found.add(str(record.get("version")))
    return found


def test_init_blocks_a_model_that_needs_an_extra_column(
    mlflow_s3: MlflowServer,
    moto_server: MotoServer,
    registered: tuple[str, list[str]],
    cli_env: dict[str, str],
    tmp_path: Path,
) -> None:
    """The MLmodel in S3 is read before the weights: v2 (needs geo_lat) is blocked with the diff."""
    model, (v1, v2) = registered
    mlflow_s3.set_alias(model, "production", v2)
    term = tmp_path / "term"
    env = _env(cli_env, moto_server)
    proc = run_init(env, *_args(tmp_path, mlflow_s3, model, "--termination-log", str(term)))
    assert proc.returncode == 1, proc.stderr
    reason = term.read_text()
    assert f"version {v2} rejected: signature mismatch (strict): missing geo_lat" in reason
    assert v2 not in _staged_versions(proc.stderr)  # refused before any weight was downloaded
    assert "no comparable input signature" not in proc.stderr
    assert not (tmp_path / "node" / "cas" / "sha256").exists() or not any(
        (tmp_path / "node" / "cas" / "sha256").iterdir()
    )
    mlflow_s3.set_alias(model, "production", v1)
    proc = run_init(env, *_args(tmp_path, mlflow_s3, model, "--unsigned-model", "refuse"))
    assert proc.returncode == 0, proc.stderr  # a compatible, signed model is not refused
    pointer = Pointer.read(tmp_path / "pod" / "pointer.json")
    assert pointer.version == v1
    assert pointer.signature is not None
    assert [c["name"] for c in pointer.signature["inputs"]] == SERVED
    assert pointer.uri.startswith("s3://mlflow-s3/")


def test_sidecar_blocks_the_flip_and_forgets_it_when_the_alias_goes(
    mlflow_s3: MlflowServer,
    moto_server: MotoServer,
    registered: tuple[str, list[str]],
    cli_env: dict[str, str],
    tmp_path: Path,
) -> None:
    """Serving v1, the alias moving to v2 is blocked with the diff; a deleted alias clears it."""
    model, (v1, v2) = registered
    env = _env(cli_env, moto_server)
    mlflow_s3.set_alias(model, "production", v1)
    assert run_init(env, *_args(tmp_path, mlflow_s3, model)).returncode == 0
    sidecar = Sidecar(env, [*_args(tmp_path, mlflow_s3, model), "--poll-interval", "3600"])
    try:
        mlflow_s3.set_alias(model, "production", v2)
        code, body = sidecar.get("/refresh?wait=60", method="POST")
        assert (code, json.loads(body)["outcome"]) == (200, "blocked"), body
        blocked = sidecar.status()["blocked"]
        assert blocked["version"] == v2
        assert blocked["diff"]["missing"] == ["geo_lat"]
        assert sidecar.status()["current"]["version"] == v1
        flip_blocked = sidecar.find("flip-blocked")
        assert flip_blocked is not None
        assert flip_blocked["level"] == "warning"
        assert v2 not in _staged_versions("".join(sidecar.lines))
        mlflow_s3.call("DELETE", "registered-models/alias", {"name": model, "alias": "production"})
        code, body = sidecar.get("/refresh", method="POST")
        assert json.loads(body)["outcome"] == "not-found", body
        status = sidecar.status()
        assert status["blocked"] is None  # the blocked version is no longer what anyone asks for
        assert f"model {model!r} has no alias:production" in status["registry"]["last_error"]
        assert wait_until(lambda: sidecar.find("selector-not-found"), timeout=5)
    finally:
        sidecar.stop()
