"""Reading a model's MLmodel signature through the store that holds it: the MLflow artifact proxy
of a real tracking server, moto's S3, and an unreachable origin."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from pointercache.adapters.retry import Backoff
from pointercache.errors import FetchUnavailable, ForbiddenURI
from pointercache.model.candidate import Candidate, Selector
from pointercache.resolve.sources import SourceOptions
from pointercache.resolve.sources.mlflow import MlflowSource
from pointercache.stage.fetchers import FetchOptions
from pointercache.stage.mlmodel import MAX_MLMODEL_BYTES, with_signature
from tests.helpers import free_port
from tests.mlflow_server import MlflowServer, mlmodel_text
from tests.servers import MotoServer
from tests.stage.conftest import allow

INPUTS = [
    {"type": "double", "name": "amount", "required": True},
    {"type": "long", "name": "age", "required": True},
]


def _candidate(uri: str) -> Candidate:
    return Candidate(model="m", version="1", uri=uri, signature_from=f"{uri}/MLmodel")


async def test_the_proxy_mlmodel_is_read_before_the_weights(
    mlflow: MlflowServer, tmp_path: Path
) -> None:
    """Through the artifact proxy: the signature's columns, with the preprocessing tag added."""
    model = mlflow.new_model()
    version = mlflow.create_version(model, {"w.bin": b"w" * 64}, inputs=INPUTS)
    source = MlflowSource(mlflow.registry_uri, SourceOptions(timeout=10))
    try:
        found = await source.resolve(model, Selector("version", version))
    finally:
        await source.aclose()
    options = FetchOptions(allow=allow(f"mlflow-artifacts+http://127.0.0.1:{mlflow.port}/"))
    signed = await with_signature(replace(found, preprocessing="2"), options, tmp_path / "s")
    assert signed.signature is not None
    assert [c["name"] for c in signed.signature["inputs"]] == ["amount", "age"]
    assert signed.signature["preprocessing"] == "2"
    assert signed.signature_from is None
    assert not (tmp_path / "s").exists()  # the scratch directory is gone


@pytest.mark.parametrize(
    ("body", "signed"),
    [
        (mlmodel_text(INPUTS, None), True),
        (mlmodel_text(None, None), False),  # an MLmodel without a signature
        (None, False),  # no MLmodel at all: unsigned, not an error
        ("signature: x" + " " * MAX_MLMODEL_BYTES, False),  # over the bound: not read
    ],
)
async def test_an_s3_mlmodel_is_read_or_counts_as_unsigned(
    moto_env: MotoServer, tmp_path: Path, body: str | None, signed: bool
) -> None:
    """From S3: a signature is read; no MLmodel, none in it, or an oversized one is unsigned."""
    bucket = moto_env.new_bucket()
    s3 = moto_env.client()
    s3.put_object(Bucket=bucket, Key="0/models/m-1/artifacts/model.pkl", Body=b"w")
    if body is not None:
        s3.put_object(Bucket=bucket, Key="0/models/m-1/artifacts/MLmodel", Body=body.encode())
    uri = f"s3://{bucket}/0/models/m-1/artifacts"
    result = await with_signature(
        _candidate(uri), FetchOptions(allow=allow(f"s3://{bucket}/")), tmp_path / "s"
    )
    assert (result.signature is not None) is signed
    if signed:
        assert result.signature is not None
        assert json.dumps(result.signature["inputs"]).count('"name"') == 2


async def test_an_unreachable_store_fails_the_candidate(tmp_path: Path) -> None:
    """A store that does not answer is FetchUnavailable: the model is not let through unread."""
    uri = f"http://127.0.0.1:{free_port()}/models/m"
    options = FetchOptions(
        allow=allow(uri.rsplit("/", 2)[0] + "/"),
        connect_timeout=1.0,
        backoff=Backoff(attempts=1),
    )
    with pytest.raises(FetchUnavailable):
        await with_signature(_candidate(uri), options, tmp_path / "s")


async def test_the_allowlist_applies_to_the_mlmodel_too(tmp_path: Path) -> None:
    """An MLmodel outside --allow is refused like the weights would be."""
    options = FetchOptions(allow=allow("s3://models/"))
    with pytest.raises(ForbiddenURI):
        await with_signature(_candidate("s3://elsewhere/m"), options, tmp_path / "s")


async def test_a_mounted_mlmodel_is_read_from_the_file(tmp_path: Path) -> None:
    """From a file:// artifact directory: the same MLmodel, the same signature."""
    artifact = tmp_path / "models" / "credit model"
    artifact.mkdir(parents=True)
    (artifact / "MLmodel").write_text(mlmodel_text(INPUTS, None))
    options = FetchOptions(allow=allow(f"{(tmp_path / 'models').as_uri()}/"))
    signed = await with_signature(_candidate(artifact.as_uri()), options, tmp_path / "s")
    assert signed.signature is not None
    assert [c["name"] for c in signed.signature["inputs"]] == ["amount", "age"]
