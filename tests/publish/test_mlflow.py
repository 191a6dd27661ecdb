"""Publishing to a real MLflow server: registered once, tagged, aliased, through outages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pointercache.model.candidate import Selector
from pointercache.publish.mlflow import KEY_TAG, VERSION_TAG
from pointercache.resolve.sources import SourceOptions
from pointercache.resolve.sources.mlflow import MlflowSource
from tests.mlflow_server import MlflowServer
from tests.publish.conftest import DIGEST, listed, publish, publish_args, run_cli
from tests.publish.proxies import proxy_to


def labelled(server: MlflowServer, model: str, version: str) -> list[dict[str, Any]]:
    """Every MLflow version of ``model`` whose ``pointercache.version`` tag is ``version``."""
    query = f"name='{model}' and tags.`{VERSION_TAG}`='{version}'"
    found: list[dict[str, Any]] = server.call(
        "GET", "model-versions/search", {"filter": query, "max_results": 100}
    ).get("model_versions", [])
    return found


def tags_of(entity: dict[str, Any]) -> dict[str, str]:
    """An MLflow entity's tags as a mapping."""
    return {t["key"]: t["value"] for t in entity.get("tags", [])}


async def resolve(server: MlflowServer, model: str, selector: str) -> Any:
    """What the MLflow source (the read side) answers for ``selector``."""
    source = MlflowSource(server.registry_uri, SourceOptions(timeout=10))
    try:
        return await source.resolve(model, Selector.parse(selector))
    finally:
        await source.aclose()


async def test_publish_registers_a_tagged_version_and_moves_the_alias(
    mlflow: MlflowServer, cli_env: dict[str, str], tmp_path: Path
) -> None:
    """With the registry up: 'registered', tags (key, digest, size), alias and revision set."""
    model = f"pub-{tmp_path.name[-12:]}"
    answer = publish(
        cli_env, mlflow.registry_uri, tmp_path / "ob", model, "1.0",
        "--digest", DIGEST, "--size-bytes", "123", "--alias", "production", "--tag", "team=recs",
    )  # fmt: skip
    assert answer["state"] == "registered"
    assert answer["result"].startswith("created as version 1, revision ")
    (version,) = labelled(mlflow, model, "1.0")
    tags = tags_of(version)
    assert tags[KEY_TAG] == answer["key"]
    assert (tags["pointercache.digest"], tags["pointercache.size_bytes"]) == (DIGEST, "123")
    assert tags["team"] == "recs"
    candidate = await resolve(mlflow, model, "alias:production")
    assert (candidate.version, candidate.digest, candidate.size_bytes) == ("1", DIGEST, 123)
    assert candidate.revision == int(answer["result"].rsplit(" ", 1)[1])


def test_registry_down_at_publish_is_queued_then_drained_once(
    mlflow: MlflowServer, cli_env: dict[str, str], tmp_path: Path
) -> None:
    """Down: 'queued', exit 0; two publishes later the drain registers both, in order, once."""
    model = f"down-{tmp_path.name[-12:]}"
    outbox = tmp_path / "ob"
    with proxy_to(mlflow.port) as proxy:
        registry = f"mlflow+http://127.0.0.1:{proxy.port}"
        proxy.mode = "reset"
        first = publish(cli_env, registry, outbox, model, "a", "--alias", "production")
        second = publish(cli_env, registry, outbox, model, "b", "--alias", "production")
        assert (first["state"], second["state"]) == ("queued", "queued")
        assert "SourceUnavailable" in first["last_error"]
        assert labelled(mlflow, model, "a") == []
        proxy.mode = "up"
        drained = run_cli(cli_env, "outbox", "drain", "--outbox", str(outbox), "--until-empty")
        assert drained.returncode == 0, drained.stderr
        again = run_cli(cli_env, "outbox", "drain", "--outbox", str(outbox))
        assert again.returncode == 0, again.stderr
    assert "registered 2, rejected 0, pending 0" in drained.stdout
    (a,) = labelled(mlflow, model, "a")
    (b,) = labelled(mlflow, model, "b")
    assert (a["version"], b["version"]) == ("1", "2")
    aliases = mlflow.call("GET", "registered-models/get", {"name": model})["registered_model"]
    assert aliases["aliases"] == [{"alias": "production", "version": "2"}]
    assert [e["state"] for e in listed(cli_env, outbox)] == ["registered", "registered"]


def test_a_lost_answer_to_create_registers_the_version_once(
    mlflow: MlflowServer, cli_env: dict[str, str], tmp_path: Path
) -> None:
    """MLflow creates the version, the proxy drops the answer; the retry finds it by its key."""
    model = f"lost-{tmp_path.name[-12:]}"
    outbox = tmp_path / "ob"
    with proxy_to(mlflow.port) as proxy:
        registry = f"mlflow+http://127.0.0.1:{proxy.port}"
        proxy.cut(b"/model-versions/create")
        answer = publish(cli_env, registry, outbox, model, "7", "--alias", "production")
        assert proxy.cuts == 1
        assert answer["state"] == "queued"
        assert len(labelled(mlflow, model, "7")) == 1  # the server did create it
        drained = run_cli(cli_env, "outbox", "drain", "--outbox", str(outbox), "--until-empty")
    assert drained.returncode == 0, drained.stderr
    (version,) = labelled(mlflow, model, "7")
    (entry,) = listed(cli_env, outbox)
    assert entry["state"] == "registered"
    assert entry["result"].startswith(f"already as version {version['version']}")
    rm = mlflow.call("GET", "registered-models/get", {"name": model})["registered_model"]
    assert rm["aliases"] == [{"alias": "production", "version": version["version"]}]
    assert "pointercache.revision" in tags_of(rm)


def test_two_outboxes_publishing_one_version_register_it_once(
    mlflow: MlflowServer, cli_env: dict[str, str], tmp_path: Path
) -> None:
    """A second pipeline run with the same model, version and digest finds it: 'already'."""
    model = f"twice-{tmp_path.name[-12:]}"
    one = publish(cli_env, mlflow.registry_uri, tmp_path / "a", model, "3", "--digest", DIGEST)
    two = publish(cli_env, mlflow.registry_uri, tmp_path / "b", model, "3", "--digest", DIGEST)
    assert (one["state"], two["state"]) == ("registered", "registered")
    assert two["result"].startswith("already as version 1")
    assert len(labelled(mlflow, model, "3")) == 1


def test_another_artifact_under_a_registered_version_is_rejected(
    mlflow: MlflowServer, cli_env: dict[str, str], tmp_path: Path
) -> None:
    """Same version name, another digest: 'rejected', exit 1, no second MLflow version."""
    model = f"clash-{tmp_path.name[-12:]}"
    publish(cli_env, mlflow.registry_uri, tmp_path / "ob", model, "3", "--digest", DIGEST)
    other = "sha256:" + "cd" * 32
    args = publish_args(mlflow.registry_uri, tmp_path / "ob", model, "3", "--digest", other)
    proc = run_cli(cli_env, *args)
    assert proc.returncode == 1
    assert '"state":"rejected"' in proc.stdout
    assert "another artifact" in proc.stdout
    assert len(labelled(mlflow, model, "3")) == 1


def test_the_token_never_reaches_the_outbox_or_the_output(
    mlflow: MlflowServer, cli_env: dict[str, str], tmp_path: Path
) -> None:
    """A bearer token from --registry-token-file is sent, but never stored, printed or logged."""
    model = f"secret-{tmp_path.name[-12:]}"
    secret = "s3cr3t-t0ken-value"
    token = tmp_path / "token"
    token.write_text(secret + "\n")
    outbox = tmp_path / "ob"
    with proxy_to(mlflow.port) as proxy:
        registry = f"mlflow+http://127.0.0.1:{proxy.port}"
        proxy.mode = "reset"
        args = publish_args(registry, outbox, model, "1", "--registry-token-file", str(token))
        queued = run_cli(cli_env, *args, "--log-level", "debug")
        proxy.mode = "up"
        drained = run_cli(
            cli_env, "outbox", "drain", "--outbox", str(outbox), "--until-empty",
            "--registry-token-file", str(token), "--log-level", "debug",
        )  # fmt: skip
    assert drained.returncode == 0, drained.stderr
    assert len(labelled(mlflow, model, "1")) == 1
    exposed = queued.stdout + queued.stderr + drained.stdout + drained.stderr
    stored = b"".join(p.read_bytes() for p in outbox.iterdir() if p.is_file())
    assert secret not in exposed
    assert secret.encode() not in stored
