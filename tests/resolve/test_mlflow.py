"""MLflow source against a real tracking server: aliases, versions, stages, status, tags."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import pytest

from pointercache.errors import ConfigError, InvalidManifest, NotFound, SourceUnavailable
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
    """An alias resolves to its version, an artifact-proxy URI and where its MLmodel is."""
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
    assert candidate.signature is None  # read by the stage layer, not within the timeout
    assert candidate.signature_from == f"{candidate.uri}/MLmodel"
    assert candidate.digest is None
    assert candidate.revision == 0  # no pointercache.revision tag: no claim


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


async def test_no_revision_without_the_tag(mlflow: MlflowServer, source: MlflowSource) -> None:
    """Without the tag every answer has revision 0: nothing is made up from a clock."""
    model = mlflow.new_model()
    v1 = mlflow.create_version(model)
    v2 = mlflow.create_version(model)
    production = Selector.parse("alias:production")
    answers = []
    for version in (v1, v2, v1):
        mlflow.set_alias(model, "production", version)
        answers.append(await source.resolve(model, production))
    assert [a.version for a in answers] == [v1, v2, v1]
    assert [a.revision for a in answers] == [0, 0, 0]


@pytest.mark.parametrize("value", [str(2**63), "-1", "soon"])
async def test_revision_tag_out_of_range_is_invalid(
    mlflow: MlflowServer, source: MlflowSource, value: str
) -> None:
    """A revision tag above 2**63-1 (or not an integer) makes the answer invalid, not clamped."""
    model = mlflow.new_model()
    mlflow.set_alias(model, "production", mlflow.create_version(model))
    mlflow.set_model_tag(model, "pointercache.revision", value)
    with pytest.raises(InvalidManifest, match=r"pointercache\.revision"):
        await source.resolve(model, Selector.parse("alias:production"))


async def test_deleted_alias_names_model_and_alias(
    mlflow: MlflowServer, source: MlflowSource
) -> None:
    """An alias deleted from MLflow is NotFound naming the model and the alias."""
    model = mlflow.new_model()
    mlflow.set_alias(model, "production", mlflow.create_version(model))
    mlflow.call("DELETE", "registered-models/alias", {"name": model, "alias": "production"})
    with pytest.raises(NotFound) as info:
        await source.resolve(model, Selector.parse("alias:production"))
    assert f"model {model!r} has no alias:production" in str(info.value)


@pytest.mark.parametrize(
    ("selector", "ok"),
    [
        ("alias:production", True),
        ("alias:canary_2", True),
        ("alias:v2.1", False),  # MLflow aliases have no dots
        ("version:12", True),
        ("version:abc", False),
        ("stage:production", True),
        ("stage:Prod", False),
    ],
)
def test_selectors_mlflow_never_answers_are_refused_up_front(selector: str, ok: bool) -> None:
    """check_selector refuses, without a request, a selector MLflow can never answer."""
    source = MlflowSource("mlflow+http://127.0.0.1:1")
    if ok:
        source.check_selector(Selector.parse(selector))
    else:
        with pytest.raises(ConfigError):
            source.check_selector(Selector.parse(selector))


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
    assert candidate.signature_from == f"{candidate.uri}/MLmodel"


async def test_s3_source_passes_through(mlflow: MlflowServer, source: MlflowSource) -> None:
    """A version stored in S3 keeps its s3:// URI, and its MLmodel is read from S3 too."""
    model = mlflow.new_model()
    version = mlflow.create_version(model, source="s3://models-bucket/recommender/8")
    candidate = await source.resolve(model, Selector.parse(f"version:{version}"))
    assert candidate.uri == "s3://models-bucket/recommender/8"
    assert candidate.signature_from == "s3://models-bucket/recommender/8/MLmodel"


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
        assert candidate.signature_from == expected.signature_from
