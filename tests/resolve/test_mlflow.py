"""MLflow source against a real tracking server: aliases, versions, stages, status, tags."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import pytest

from pointercache.errors import InvalidManifest, NotFound, SourceUnavailable
from pointercache.model.candidate import Selector
from pointercache.resolve.sources import SourceOptions, open_source
from pointercache.resolve.sources.mlflow import MlflowSource
from tests.mlflow_server import MlflowServer

INPUTS = [
    {"type": "double", "name": "amount", "required": True},
    {"type": "string", "name": "country", "required": False},
]
DIGEST = "sha256:" + hashlib.sha256(b"x").hexdigest()


@pytest.fixture
async def source(mlflow: MlflowServer) -> AsyncIterator[MlflowSource]:
    """An MLflow source for the shared server with a generous timeout (a busy CI machine)."""
    src = open_source(mlflow.registry_uri, SourceOptions(timeout=10.0))
    assert isinstance(src, MlflowSource)
    try:
        yield src
    finally:
        await src.aclose()


async def test_alias_resolves_to_ready_version_with_proxy_uri(
    mlflow: MlflowServer, source: MlflowSource
) -> None:
    """An alias resolves to its version, an artifact-proxy URI and the MLmodel signature."""
    model = mlflow.new_model()
    mlflow.create_version(model, {"w.bin": b"1"})
    v2 = mlflow.create_version(model, {"w.bin": b"2"}, inputs=INPUTS)
    mlflow.set_alias(model, "production", v2)
    candidate = await source.resolve(model, Selector.parse("alias:production"))
    assert candidate.model == model
    assert candidate.version == v2
    assert candidate.uri.startswith(f"mlflow-artifacts+http://127.0.0.1:{mlflow.port}/")
    assert candidate.uri.endswith("/model")
    assert candidate.registry == mlflow.registry_uri
    assert candidate.signature is not None
    names = [col["name"] for col in candidate.signature["inputs"]]
    assert names == ["amount", "country"]
    assert candidate.digest is None
    assert candidate.revision > 0


async def test_version_and_stage_selectors(mlflow: MlflowServer, source: MlflowSource) -> None:
    """version:N picks that version; stage:NAME picks the newest version in that stage."""
    model = mlflow.new_model()
    v1 = mlflow.create_version(model)
    v2 = mlflow.create_version(model)
    v3 = mlflow.create_version(model)
    mlflow.transition(model, v1, "Production")
    mlflow.transition(model, v2, "Production")
    mlflow.transition(model, v3, "Staging")
    assert (await source.resolve(model, Selector.parse("version:1"))).version == v1
    assert (await source.resolve(model, Selector.parse("stage:Production"))).version == v2
    assert (await source.resolve(model, Selector.parse("stage:Staging"))).version == v3
    with pytest.raises(NotFound):
        await source.resolve(model, Selector.parse("stage:Archived"))


@pytest.mark.parametrize(
    "selector", ["alias:missing", "version:99", "version:abc", "stage:Nonsense"]
)
async def test_unknown_selector_is_not_found(
    mlflow: MlflowServer, source: MlflowSource, selector: str
) -> None:
    """A missing alias, version or stage (and a malformed one) is NotFound, not an outage."""
    model = mlflow.new_model()
    mlflow.create_version(model)
    with pytest.raises(NotFound):
        await source.resolve(model, Selector.parse(selector))


async def test_unknown_model_is_not_found(source: MlflowSource) -> None:
    """A model the registry does not know is NotFound."""
    with pytest.raises(NotFound):
        await source.resolve("no-such-model", Selector.parse("alias:production"))


async def test_pending_version_is_unavailable_and_failed_is_not_found(
    mlflow: MlflowServer, source: MlflowSource
) -> None:
    """A registering version is a transient SourceUnavailable; a failed one is NotFound."""
    model = mlflow.new_model()
    version = mlflow.create_version(model)
    mlflow.set_alias(model, "production", version)
    mlflow.set_status(model, version, "PENDING_REGISTRATION")
    with pytest.raises(SourceUnavailable, match="still registering"):
        await source.resolve(model, Selector.parse("alias:production"))
    mlflow.set_status(model, version, "FAILED_REGISTRATION")
    with pytest.raises(NotFound, match="FAILED_REGISTRATION"):
        await source.resolve(model, Selector.parse("alias:production"))
    mlflow.set_status(model, version, "READY")
    assert (await source.resolve(model, Selector.parse("alias:production"))).version == version


async def test_digest_and_size_tags_are_used(mlflow: MlflowServer, source: MlflowSource) -> None:
    """The pointercache.digest and pointercache.size_bytes version tags become the promise."""
    model = mlflow.new_model()
    version = mlflow.create_version(model)
    mlflow.set_version_tag(model, version, "pointercache.digest", DIGEST)
    mlflow.set_version_tag(model, version, "pointercache.size_bytes", "1234")
    candidate = await source.resolve(model, Selector.parse(f"version:{version}"))
    assert candidate.digest == DIGEST
    assert candidate.size_bytes == 1234


async def test_malformed_digest_tag_is_invalid(mlflow: MlflowServer, source: MlflowSource) -> None:
    """A digest tag that is not sha256:<64 hex> makes the answer invalid, not silently ignored."""
    model = mlflow.new_model()
    version = mlflow.create_version(model)
    mlflow.set_version_tag(model, version, "pointercache.digest", "md5:abc")
    with pytest.raises(InvalidManifest, match=r"pointercache\.digest"):
        await source.resolve(model, Selector.parse(f"version:{version}"))


async def test_revision_increases_on_rollback(mlflow: MlflowServer, source: MlflowSource) -> None:
    """Moving the alias back to a lower version still yields a higher revision."""
    model = mlflow.new_model()
    v1 = mlflow.create_version(model)
    v2 = mlflow.create_version(model)
    production = Selector.parse("alias:production")
    mlflow.set_alias(model, "production", v1)
    first = await source.resolve(model, production)
    again = await source.resolve(model, production)
    mlflow.set_alias(model, "production", v2)
    forward = await source.resolve(model, production)
    mlflow.set_alias(model, "production", v1)
    rollback = await source.resolve(model, production)
    assert again.revision == first.revision  # same answer, same revision
    assert first.revision < forward.revision < rollback.revision
    assert rollback.version == v1


async def test_revision_tag_wins(mlflow: MlflowServer, source: MlflowSource) -> None:
    """The registered-model tag pointercache.revision is used as the revision when set."""
    model = mlflow.new_model()
    version = mlflow.create_version(model)
    mlflow.set_alias(model, "production", version)
    mlflow.set_model_tag(model, "pointercache.revision", "1795000000000")
    candidate = await source.resolve(model, Selector.parse("alias:production"))
    assert candidate.revision == 1795000000000


async def test_runs_source_resolves_through_the_run(
    mlflow: MlflowServer, source: MlflowSource
) -> None:
    """A version registered from runs:/<id>/model resolves to the run's proxied artifacts."""
    model = mlflow.new_model()
    version = mlflow.create_version(model, {"w.bin": b"r"}, inputs=INPUTS, source="runs")
    candidate = await source.resolve(model, Selector.parse(f"version:{version}"))
    assert candidate.uri.startswith("mlflow-artifacts+http://")
    assert candidate.uri.endswith("/artifacts/model")
    assert candidate.signature is not None


async def test_s3_source_passes_through(mlflow: MlflowServer, source: MlflowSource) -> None:
    """A version stored in S3 keeps its s3:// URI for the S3 fetcher; no signature is read."""
    model = mlflow.new_model()
    version = mlflow.create_version(model, source="s3://models-bucket/recommender/8")
    candidate = await source.resolve(model, Selector.parse(f"version:{version}"))
    assert candidate.uri == "s3://models-bucket/recommender/8"
    assert candidate.signature is None


async def test_missing_mlmodel_means_no_signature(
    mlflow: MlflowServer, source: MlflowSource
) -> None:
    """A version whose artifact has no MLmodel file resolves with signature None."""
    model = mlflow.new_model()
    run_id, root = mlflow.new_run()
    mlflow.upload(f"{root}/bare/w.bin", b"w")
    body = {"name": model, "source": f"mlflow-artifacts:/{root}/bare", "run_id": run_id}
    version = mlflow.call("POST", "model-versions/create", body)["model_version"]["version"]
    candidate = await source.resolve(model, Selector.parse(f"version:{version}"))
    assert candidate.signature is None


async def test_models_source_resolves_through_the_other_version(
    mlflow: MlflowServer, source: MlflowSource
) -> None:
    """A version registered from models:/<name>/<version> or models:/<name>@<alias> resolves."""
    base = mlflow.new_model()
    base_version = mlflow.create_version(base, {"w.bin": b"b"}, inputs=INPUTS)
    mlflow.set_alias(base, "champion", base_version)
    expected = await source.resolve(base, Selector.parse(f"version:{base_version}"))
    model = mlflow.new_model()
    by_version = mlflow.create_version(model, source=f"models:/{base}/{base_version}")
    by_alias = mlflow.create_version(model, source=f"models:/{base}@champion")
    for version in (by_version, by_alias):
        candidate = await source.resolve(model, Selector.parse(f"version:{version}"))
        assert candidate.uri == expected.uri
        assert candidate.signature == expected.signature
