"""S3 manifest source against moto's standalone server: ETag-conditional GETs and errors."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import orjson
import pytest

from pointercache.errors import ConfigError, InvalidManifest, NotFound, SourceUnavailable
from pointercache.model.candidate import Selector
from pointercache.resolve.sources import SourceOptions, open_source
from pointercache.resolve.sources.s3 import S3ManifestSource
from tests.helpers import await_until
from tests.servers import MotoServer, TricklingS3

PROD = Selector.parse("alias:production")


def manifest(revision: int, production: str) -> bytes:
    """A valid manifest for model 'rec'."""
    return orjson.dumps(
        {
            "schema": 1,
            "model": "rec",
            "revision": revision,
            "aliases": {"production": production},
            "versions": {production: {"uri": f"s3://models/rec/{production}/"}},
        }
    )


async def test_second_get_is_not_modified_and_changes_are_seen(moto_env: MotoServer) -> None:
    """An unchanged object answers 304 to the ETag; a rewritten one is read again."""
    bucket = moto_env.new_bucket()
    moto_env.client().put_object(Bucket=bucket, Key="rec.json", Body=manifest(1, "8"))
    source = open_source(f"s3://{bucket}/rec.json", SourceOptions(timeout=10))
    assert isinstance(source, S3ManifestSource)
    try:
        first = await source.resolve("rec", PROD)
        second = await source.resolve("rec", PROD)
        assert source.not_modified == 1
        moto_env.client().put_object(Bucket=bucket, Key="rec.json", Body=manifest(2, "9"))
        third = await source.resolve("rec", PROD)
    finally:
        await source.aclose()
    assert first == second
    assert (first.version, first.revision) == ("8", 1)
    assert (third.version, third.revision) == ("9", 2)
    assert source.requests == 3
    assert source.not_modified == 1


async def test_missing_key_is_not_found(moto_env: MotoServer) -> None:
    """A missing manifest object is NotFound."""
    bucket = moto_env.new_bucket()
    source = S3ManifestSource(f"s3://{bucket}/absent.json", SourceOptions(timeout=10))
    try:
        with pytest.raises(NotFound):
            await source.resolve("rec", PROD)
    finally:
        await source.aclose()


async def test_oversized_object_is_invalid(moto_env: MotoServer) -> None:
    """An object larger than max_manifest_bytes is InvalidManifest."""
    bucket = moto_env.new_bucket()
    moto_env.client().put_object(Bucket=bucket, Key="big.json", Body=b" " * 5000)
    options = SourceOptions(timeout=10, max_manifest_bytes=1000)
    source = S3ManifestSource(f"s3://{bucket}/big.json", options)
    try:
        with pytest.raises(InvalidManifest):
            await source.resolve("rec", PROD)
    finally:
        await source.aclose()


async def test_stopped_store_is_unavailable(
    private_moto: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the S3 endpoint is down, resolving is SourceUnavailable."""
    for name, value in private_moto.env().items():
        monkeypatch.setenv(name, value)
    bucket = private_moto.new_bucket()
    private_moto.client().put_object(Bucket=bucket, Key="rec.json", Body=manifest(1, "8"))
    source = S3ManifestSource(f"s3://{bucket}/rec.json", SourceOptions(timeout=5))
    try:
        assert (await source.resolve("rec", PROD)).version == "8"
        private_moto.stop()
        with pytest.raises(SourceUnavailable):
            await source.resolve("rec", PROD)
    finally:
        await source.aclose()


@pytest.mark.parametrize("uri", ["s3://bucket-name/", "s3://bucket-name", "s3://Bad_Bucket/k.json"])
def test_bad_uri_is_a_config_error(uri: str) -> None:
    """A registry URI that names no object is a ConfigError at startup."""
    with pytest.raises(ConfigError):
        S3ManifestSource(uri)


async def test_invalidate_makes_the_next_get_unconditional(
    private_moto: MotoServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Polls are ETag-conditional (304); after invalidate() the next GET is a full 200."""
    for name, value in private_moto.env().items():
        monkeypatch.setenv(name, value)
    bucket = private_moto.new_bucket()
    private_moto.client().put_object(Bucket=bucket, Key="rec.json", Body=manifest(1, "8"))
    source = S3ManifestSource(f"s3://{bucket}/rec.json", SourceOptions(timeout=5))
    try:
        for _ in range(2):
            await source.resolve("rec", PROD)
        source.invalidate()
        await source.resolve("rec", PROD)
    finally:
        await source.aclose()
    log = (tmp_path / "moto.log").read_text()
    log = re.sub(r"\x1b\[[0-9;]*m", "", log)  # werkzeug colours some status lines
    statuses = re.findall(rf'"GET /{bucket}/rec\.json HTTP/1\.1" (\d+)', log)
    assert statuses == ["200", "304", "200"]


async def test_a_trickling_store_costs_the_timeout_and_the_read_ends(moto_env: MotoServer) -> None:
    """A manifest body that trickles: unavailable within the timeout, and the worker thread
    stops reading soon after (the proxy sees the client leave)."""
    bucket = moto_env.new_bucket()
    moto_env.client().put_object(Bucket=bucket, Key="rec.json", Body=manifest(1, "8") * 50)
    proxy = await TricklingS3(moto_env.endpoint_url).start()
    options = SourceOptions(timeout=1.0, s3_endpoint_url=proxy.endpoint_url)
    source = S3ManifestSource(f"s3://{bucket}/rec.json", options)
    try:
        await asyncio.to_thread(source._ensure_client)  # boto3's import is not the registry's time
        started = time.monotonic()
        with pytest.raises(SourceUnavailable, match="timed out"):
            await source.resolve("rec", PROD)
        assert time.monotonic() - started < 5.0  # bound on waiting, not a timing claim
        await await_until(lambda: proxy.disconnects, timeout=10.0)
        assert proxy.disconnects[0] - started < 5.0
    finally:
        await source.aclose()
        await proxy.stop()
