"""The S3 fetcher against moto's standalone server over HTTP."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pointercache.adapters.pace import Pace
from pointercache.adapters.retry import Backoff
from pointercache.errors import ArtifactNotFound, FetchUnavailable, ForbiddenURI, Stalled, TooLarge
from pointercache.model.digest import listed_digest, tree_digest
from pointercache.stage.fetchers import FetchOptions, open_fetcher
from pointercache.stage.fetchers.s3 import S3Fetcher, relpath_of
from tests.servers import MotoServer, TricklingS3
from tests.stage.conftest import allow

MiB = 1 << 20


def _options(bucket: str, **kw: object) -> FetchOptions:
    return FetchOptions(allow=allow(f"s3://{bucket}/"), **kw)  # type: ignore[arg-type]


async def test_single_object_is_written_with_its_digest(
    moto_env: MotoServer, tmp_path: Path
) -> None:
    """A key that exists is fetched as one file, and its sha256 is reported."""
    bucket = moto_env.new_bucket()
    data = os.urandom(3 * MiB + 17)
    moto_env.client().put_object(Bucket=bucket, Key="m/model.bin", Body=data)
    fetcher = open_fetcher(f"s3://{bucket}/m/model.bin", _options(bucket))
    try:
        result = await fetcher.fetch(f"s3://{bucket}/m/model.bin", tmp_path / "out")
    finally:
        await fetcher.aclose()
    assert (tmp_path / "out").read_bytes() == data
    assert (result.is_dir, result.size_bytes) == (False, len(data))
    assert result.sha256 == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("suffix", ["/", ""])
async def test_prefix_is_fetched_as_a_directory(
    moto_env: MotoServer, tmp_path: Path, suffix: str
) -> None:
    """Every object under a prefix lands at its relative path, hashed while written; folder
    markers are skipped."""
    bucket = moto_env.new_bucket()
    s3 = moto_env.client()
    files = {"MLmodel": b"flavors: {}\n", "data/model.pkl": os.urandom(4096), "a/b/c.txt": b""}
    for rel, body in files.items():
        s3.put_object(Bucket=bucket, Key=f"models/8/{rel}", Body=body)
    s3.put_object(Bucket=bucket, Key="models/8/empty-folder/", Body=b"")
    s3.put_object(Bucket=bucket, Key="models/80/other", Body=b"not mine")
    fetcher = S3Fetcher(_options(bucket))
    try:
        result = await fetcher.fetch(f"s3://{bucket}/models/8{suffix}", tmp_path / "out")
    finally:
        await fetcher.aclose()
    found = {
        p.relative_to(tmp_path / "out").as_posix(): p.read_bytes()
        for p in (tmp_path / "out").rglob("*")
        if p.is_file()
    }
    assert found == files
    assert (result.is_dir, result.size_bytes) == (True, sum(map(len, files.values())))
    assert result.files is not None  # hashed while written: the digest needs no second read
    assert listed_digest(tmp_path / "out", result.files) == tree_digest(tmp_path / "out")


async def test_keys_with_spaces_and_percent_signs_are_fetched(
    moto_env: MotoServer, tmp_path: Path
) -> None:
    """S3 keys are literal: 'credit models/v 1/' and '100%.txt' are fetched as they are named."""
    bucket = moto_env.new_bucket()
    s3 = moto_env.client()
    files = {"feature names.txt": b"amount\nage\n", "100%.txt": b"p", "mod\u00e8le.pkl": b"w"}
    for rel, body in files.items():
        s3.put_object(Bucket=bucket, Key=f"credit models/v 1/{rel}", Body=body)
    options = FetchOptions(allow=allow(f"s3://{bucket}/credit models/"))
    fetcher = S3Fetcher(options)
    try:
        await fetcher.fetch(f"s3://{bucket}/credit models/v 1/", tmp_path / "out")
        single = await fetcher.fetch(f"s3://{bucket}/credit models/v 1/100%.txt", tmp_path / "one")
    finally:
        await fetcher.aclose()
    found = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    assert found == files
    assert (tmp_path / "one").read_bytes() == b"p"
    assert single.size_bytes == 1


async def test_prefix_listing_follows_every_page(moto_env: MotoServer, tmp_path: Path) -> None:
    """A prefix listed over several ListObjectsV2 pages is fetched completely."""
    bucket = moto_env.new_bucket()
    s3 = moto_env.client()
    names = [f"shard-{i:02d}.bin" for i in range(7)]
    for name in names:
        s3.put_object(Bucket=bucket, Key=f"m/{name}", Body=name.encode())
    fetcher = S3Fetcher(_options(bucket), list_page_size=2)
    try:
        result = await fetcher.fetch(f"s3://{bucket}/m/", tmp_path / "out")
    finally:
        await fetcher.aclose()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == names
    assert result.size_bytes == sum(len(n) for n in names)


async def test_large_object_is_fetched_in_ranged_parts(
    moto_env: MotoServer, tmp_path: Path
) -> None:
    """A >64 MiB object is fetched as parallel ranges with the right bytes, digest and progress."""
    bucket = moto_env.new_bucket()
    data = os.urandom(65 * MiB + 12345)
    moto_env.client().put_object(Bucket=bucket, Key="big.bin", Body=data)
    seen: list[tuple[int, int | None]] = []
    options = _options(bucket, progress=lambda done, total: seen.append((done, total)))
    fetcher = S3Fetcher(options, part_size=8 * MiB, multipart_threshold=8 * MiB, concurrency=4)
    try:
        result = await fetcher.fetch(f"s3://{bucket}/big.bin", tmp_path / "big")
    finally:
        await fetcher.aclose()
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert hashlib.sha256((tmp_path / "big").read_bytes()).digest() == hashlib.sha256(data).digest()
    assert seen[-1] == (len(data), len(data))
    assert len(seen) >= 9  # nine 8 MiB parts, at least one progress call each


@pytest.mark.parametrize("key", ["missing.bin", "missing/"])
async def test_missing_key_is_artifact_not_found(
    moto_env: MotoServer, tmp_path: Path, key: str
) -> None:
    """A key or prefix with no objects raises ArtifactNotFound and leaves nothing at dest."""
    bucket = moto_env.new_bucket()
    fetcher = S3Fetcher(_options(bucket))
    try:
        with pytest.raises(ArtifactNotFound):
            await fetcher.fetch(f"s3://{bucket}/{key}", tmp_path / "out")
    finally:
        await fetcher.aclose()
    assert not (tmp_path / "out").exists()


async def test_missing_bucket_is_artifact_not_found(moto_env: MotoServer, tmp_path: Path) -> None:
    """A bucket that does not exist raises ArtifactNotFound."""
    fetcher = S3Fetcher(_options("no-such-bucket-here"))
    try:
        with pytest.raises(ArtifactNotFound):
            await fetcher.fetch("s3://no-such-bucket-here/k", tmp_path / "out")
    finally:
        await fetcher.aclose()


async def test_key_escaping_the_prefix_is_refused(moto_env: MotoServer, tmp_path: Path) -> None:
    """A listed key with an empty path segment is ForbiddenURI; nothing is left at dest."""
    bucket = moto_env.new_bucket()
    s3 = moto_env.client()
    s3.put_object(Bucket=bucket, Key="m/ok.txt", Body=b"ok")
    s3.put_object(Bucket=bucket, Key="m//etc/passwd", Body=b"x")
    fetcher = S3Fetcher(_options(bucket))
    try:
        with pytest.raises(ForbiddenURI):
            await fetcher.fetch(f"s3://{bucket}/m/", tmp_path / "out")
    finally:
        await fetcher.aclose()
    assert not (tmp_path / "out").exists()


async def test_policy_is_checked_before_any_request(moto_env: MotoServer, tmp_path: Path) -> None:
    """A URI the policy refuses raises ForbiddenURI (not ArtifactNotFound: no request is sent)."""
    fetcher = S3Fetcher(_options("allowed-bucket"))
    try:
        with pytest.raises(ForbiddenURI):
            await fetcher.fetch("s3://other-bucket/key", tmp_path / "out")
    finally:
        await fetcher.aclose()


@pytest.mark.parametrize("prefix", [False, True])
async def test_over_the_size_limit_is_too_large(
    moto_env: MotoServer, tmp_path: Path, prefix: bool
) -> None:
    """An object or prefix over max_bytes raises TooLarge before any body is written."""
    bucket = moto_env.new_bucket()
    moto_env.client().put_object(Bucket=bucket, Key="d/k", Body=b"x" * 2048)
    fetcher = S3Fetcher(_options(bucket, max_bytes=1024))
    try:
        with pytest.raises(TooLarge):
            await fetcher.fetch(f"s3://{bucket}/{'d/' if prefix else 'd/k'}", tmp_path / "out")
    finally:
        await fetcher.aclose()
    assert not (tmp_path / "out").exists()


async def test_object_replaced_mid_download_fails(moto_env: MotoServer, tmp_path: Path) -> None:
    """Parts are pinned to the first ETag, so an object replaced mid-download is not mixed."""
    bucket = moto_env.new_bucket()
    s3 = moto_env.client()
    s3.put_object(Bucket=bucket, Key="k", Body=b"a" * (4 * MiB))
    replaced: list[bool] = []

    def replace(done: int, total: int | None) -> None:
        if not replaced:
            replaced.append(True)
            s3.put_object(Bucket=bucket, Key="k", Body=b"b" * (4 * MiB))

    options = _options(
        bucket, progress=replace, backoff=Backoff(attempts=2, initial=0.01, maximum=0.1)
    )
    fetcher = S3Fetcher(options, part_size=MiB, multipart_threshold=MiB, concurrency=1)
    try:
        with pytest.raises(FetchUnavailable):
            await fetcher.fetch(f"s3://{bucket}/k", tmp_path / "out")
    finally:
        await fetcher.aclose()
    assert not (tmp_path / "out").exists()


async def test_outage_mid_download_then_retry_succeeds(
    private_moto: MotoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """S3 killed mid-download gives FetchUnavailable and no partial file; after restart it works."""
    for name, value in private_moto.env().items():
        monkeypatch.setenv(name, value)
    bucket = "outage"
    data = os.urandom(6 * MiB)

    def upload() -> None:
        private_moto.client().create_bucket(Bucket=bucket)
        private_moto.client().put_object(Bucket=bucket, Key="m.bin", Body=data)

    upload()

    def kill(done: int, total: int | None) -> None:
        if private_moto.running:
            private_moto.stop()

    uri = f"s3://{bucket}/m.bin"
    fetcher = S3Fetcher(
        _options(bucket, progress=kill, backoff=Backoff(attempts=3, initial=0.01, maximum=0.1)),
        part_size=256 << 10,
        multipart_threshold=256 << 10,
        concurrency=2,
    )
    try:
        with pytest.raises(FetchUnavailable):
            await fetcher.fetch(uri, tmp_path / "out")
        assert not (tmp_path / "out").exists()
        private_moto.start()
        upload()
        fetcher2 = S3Fetcher(_options(bucket), part_size=MiB, multipart_threshold=MiB)
        try:
            result = await fetcher2.fetch(uri, tmp_path / "out")
        finally:
            await fetcher2.aclose()
    finally:
        await fetcher.aclose()
    assert result.sha256 == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("p/a/b.txt", "a/b.txt"),
        ("p/sub/", None),
        ("p/", None),
        ("p/../etc/passwd", ForbiddenURI),
        ("p/a/./b", ForbiddenURI),
        ("p//abs", ForbiddenURI),
        ("p/a\0b", ForbiddenURI),
    ],
)
def test_relpath_of_keys(key: str, expected: str | type[Exception] | None) -> None:
    """Keys map to relative paths; markers are skipped; traversal and empty segments are refused."""
    if isinstance(expected, type):
        with pytest.raises(expected):
            relpath_of("p/", key, "s3://b/p/")
    else:
        assert relpath_of("p/", key, "s3://b/p/") == expected


@pytest.fixture
async def trickling(moto_env: MotoServer) -> AsyncIterator[TricklingS3]:
    """A proxy in front of the shared moto server that trickles object bodies."""
    proxy = await TricklingS3(moto_env.endpoint_url).start()
    try:
        yield proxy
    finally:
        await proxy.stop()


@pytest.mark.parametrize("size", [200_000, 3 * MiB])
async def test_a_trickling_store_fails_the_fetch_as_stalled(
    moto_env: MotoServer, trickling: TricklingS3, tmp_path: Path, size: int
) -> None:
    """Whole GET or ranged parts: bodies that trickle fail with Stalled after the window."""
    bucket = moto_env.new_bucket()
    moto_env.client().put_object(Bucket=bucket, Key="m/w.bin", Body=os.urandom(size))
    options = _options(bucket, pace=Pace(min_rate=64 * 1024, window=1.0))
    fetcher = S3Fetcher(
        options,
        endpoint_url=trickling.endpoint_url,
        part_size=1 * MiB,
        multipart_threshold=1 * MiB,
        concurrency=2,
    )
    try:
        with pytest.raises(Stalled, match=r"w\.bin"):
            await fetcher.fetch(f"s3://{bucket}/m/w.bin", tmp_path / "out")
    finally:
        await fetcher.aclose()
    assert trickling.trickled == (1 if size < MiB else 2)  # stalls are not retried at once
    assert not (tmp_path / "out").exists()
