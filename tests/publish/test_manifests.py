"""Publishing to manifests: file:// (flock), s3:// (If-Match, moto), configmap:// (kmock)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import orjson
import pytest

from pointercache.adapters.kube.config import KubeConfig
from pointercache.errors import ConcurrentUpdate, UnsafeRegistry
from pointercache.fleet.promote import move_file_alias
from pointercache.model.candidate import Selector
from pointercache.model.manifest import parse
from pointercache.publish.edit import apply
from pointercache.publish.manifests import ConfigMapRegistrar, S3Registrar
from pointercache.publish.registration import Outcome, Registration
from pointercache.resolve.sources import SourceOptions
from pointercache.resolve.sources.configmap import ConfigMapSource
from pointercache.resolve.sources.file import FileManifestSource
from pointercache.resolve.sources.s3 import S3ManifestSource
from pointercache.volume.fsutil import held, lock_beside
from tests.helpers import cli
from tests.kube_api import ConfigMapApi
from tests.publish.conftest import listed, publish, publish_args, run_cli
from tests.publish.proxies import proxy_to
from tests.servers import MotoServer

WRITERS = 6
"""Concurrent publisher processes per manifest."""
LIMIT = 1 << 20


def reg(version: str, alias: str | None = None) -> Registration:
    """A registration of model ``m``."""
    return Registration.build(model="m", version=version, uri=f"s3://b/m/{version}/", alias=alias)


def s3_env(cli_env: dict[str, str], server: MotoServer, endpoint: str | None = None) -> dict:
    """CLI environment pointing boto3 at ``endpoint`` (default: the moto server)."""
    return cli_env | server.env() | ({"AWS_ENDPOINT_URL": endpoint} if endpoint else {})


async def test_publish_to_a_file_manifest_is_what_the_file_source_reads(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    """v1 then v2 with the alias: the file source resolves v2 at revision 2."""
    manifest = tmp_path / "registry" / "m.json"
    registry = manifest.as_uri()
    artifact = tmp_path / "model"
    artifact.mkdir()
    (artifact / "w.bin").write_bytes(b"weights")
    publish(cli_env, registry, tmp_path / "ob", "m", "1", "--alias", "production")
    answer = publish(
        cli_env, registry, tmp_path / "ob", "m", "2", "--alias", "production",
        "--digest-from", str(artifact),
    )  # fmt: skip
    assert answer["state"] == "registered"
    source = FileManifestSource(registry)
    candidate = await source.resolve("m", Selector.parse("alias:production"))
    assert (candidate.version, candidate.revision, candidate.size_bytes) == ("2", 2, 7)
    assert candidate.digest is not None


@pytest.mark.slow
def test_concurrent_publishers_on_one_file_manifest_lose_nothing(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    """Six processes publish six versions at once: all six are there, revision 6."""
    manifest = tmp_path / "m.json"
    _race(cli_env, manifest.as_uri(), tmp_path)
    doc = parse(manifest.read_bytes(), model="m", max_bytes=LIMIT)
    assert sorted(doc.versions) == [str(n) for n in range(WRITERS)]
    assert doc.revision == WRITERS


@pytest.mark.slow
def test_concurrent_publishers_on_one_s3_manifest_lose_nothing(
    cli_env: dict[str, str], tmp_path: Path, moto_server: MotoServer
) -> None:
    """Six processes publish to one S3 key at once: If-Match keeps every update."""
    bucket = moto_server.new_bucket()
    _race(s3_env(cli_env, moto_server), f"s3://{bucket}/m.json", tmp_path)
    body = moto_server.client().get_object(Bucket=bucket, Key="m.json")["Body"].read()
    doc = parse(body, model="m", max_bytes=LIMIT)
    assert sorted(doc.versions) == [str(n) for n in range(WRITERS)]
    assert doc.revision == WRITERS


def _race(env: dict[str, str], registry: str, tmp_path: Path) -> None:
    """Start WRITERS publishers (own outboxes) together; each must end 'registered'."""
    gate = tmp_path / "gate"
    procs = []
    for n in range(WRITERS):
        args = publish_args(registry, tmp_path / f"ob{n}", "m", str(n), "--alias", "production")
        # Every writer waits for the gate file, so the read-modify-writes really overlap.
        script = (
            "import os, sys, time, runpy\n"
            f"while not os.path.exists({str(gate)!r}): time.sleep(0.005)\n"
            "sys.argv = ['pointercache', *sys.argv[1:]]\n"
            "runpy.run_module('pointercache_cli', run_name='__main__')\n"
        )
        procs.append(
            subprocess.Popen(
                [cli()[0], "-c", script, *args[0:], "--registry-timeout", "30"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    gate.touch()
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert '"state":"registered"' in out, out + err


async def test_publish_to_s3_is_what_the_s3_source_reads(
    cli_env: dict[str, str], tmp_path: Path, moto_env: MotoServer
) -> None:
    """A publish to s3:// writes a manifest the S3 source resolves."""
    moto_server = moto_env
    bucket = moto_server.new_bucket()
    registry = f"s3://{bucket}/m.json"
    answer = publish(s3_env(cli_env, moto_server), registry, tmp_path / "ob", "m", "4",
                     "--alias", "production")  # fmt: skip
    assert answer["state"] == "registered"
    options = SourceOptions(timeout=10, s3_endpoint_url=moto_server.endpoint_url)
    source = S3ManifestSource(registry, options)
    try:
        candidate = await source.resolve("m", Selector.parse("alias:production"))
    finally:
        await source.aclose()
    assert (candidate.version, candidate.revision) == ("4", 1)


def test_a_lost_answer_to_the_s3_put_registers_once(
    cli_env: dict[str, str], tmp_path: Path, moto_server: MotoServer
) -> None:
    """moto stores the PUT, the answer is cut; the retried PUT loses its If-None-Match, the
    re-read finds the key (within publish's one try or the drain): one write, 'already'."""
    bucket = moto_server.new_bucket()
    registry = f"s3://{bucket}/m.json"
    outbox = tmp_path / "ob"
    with proxy_to(moto_server.port) as proxy:
        env = s3_env(cli_env, moto_server, f"http://127.0.0.1:{proxy.port}")
        proxy.cut(f"PUT /{bucket}/m.json ".encode())
        publish(env, registry, outbox, "m", "1", "--alias", "production")
        assert proxy.cuts == 1
        drained = run_cli(env, "outbox", "drain", "--outbox", str(outbox), "--until-empty")
    assert drained.returncode == 0, drained.stderr
    (entry,) = listed(cli_env, outbox)
    assert entry["result"].startswith("already as version 1, revision 1"), entry["result"]
    body = moto_server.client().get_object(Bucket=bucket, Key="m.json")["Body"].read()
    assert orjson.loads(body)["revision"] == 1


async def test_a_store_that_ignores_conditional_writes_gets_no_write(
    tmp_path: Path, moto_env: MotoServer
) -> None:
    """Through a proxy that strips If-Match/If-None-Match, the registrar refuses to write."""
    bucket = moto_env.new_bucket()
    with proxy_to(moto_env.port) as proxy:
        proxy.strip = ("If-Match", "If-None-Match")
        endpoint = f"http://127.0.0.1:{proxy.port}"
        options = SourceOptions(timeout=10, s3_endpoint_url=endpoint)
        registrar = S3Registrar(f"s3://{bucket}/m.json", options)
        try:
            with pytest.raises(UnsafeRegistry, match="conditional writes"):
                await registrar.register(reg("1"))
        finally:
            await registrar.aclose()
    listing = moto_env.client().list_objects_v2(Bucket=bucket).get("Contents", [])
    assert "m.json" not in [o["Key"] for o in listing]


async def test_configmap_publish_uses_resource_versions(
    cmapi: ConfigMapApi, tmp_path: Path
) -> None:
    """Created, then replaced through two injected 409s: the ConfigMap source reads v2."""
    options = SourceOptions(timeout=10, kube=KubeConfig(host=cmapi.url, request_timeout=5.0))
    registrar = ConfigMapRegistrar("configmap://ml/models", options)
    try:
        first = await registrar.register(reg("1", alias="production"))
        cmapi.inject_conflicts = 2
        second = await registrar.register(reg("2", alias="production"))
        again = await registrar.register(reg("2", alias="production"))
    finally:
        await registrar.aclose()
    assert (first.outcome, second.outcome, again.outcome) == (
        Outcome.CREATED,
        Outcome.CREATED,
        Outcome.ALREADY,
    )
    assert (cmapi.count("create"), cmapi.count("replace")) == (1, 3)
    assert cmapi.stored_revisions["m.json"] == [1, 2]
    source = ConfigMapSource("configmap://ml/models", options)
    try:
        candidate = await source.resolve("m", Selector.parse("alias:production"))
    finally:
        await source.aclose()
    assert (candidate.version, candidate.revision) == ("2", 2)


def test_promote_takes_the_lock_publish_takes(tmp_path: Path) -> None:
    """While a publisher holds the manifest's lock promote cannot write; once free, it does."""
    manifest = tmp_path / "m.json"
    data, _ = apply(None, reg("1"), max_bytes=LIMIT)
    assert data is not None
    manifest.write_bytes(data)
    with held(lock_beside(manifest), timeout=1.0):
        with pytest.raises(ConcurrentUpdate, match="locked by pid"):
            move_file_alias(manifest, "m", "production", "1", lock_timeout=0.2)
        assert parse(manifest.read_bytes(), model="m", max_bytes=LIMIT).aliases == {}
    assert move_file_alias(manifest, "m", "production", "1") == 2
