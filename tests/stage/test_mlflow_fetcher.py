"""The mlflow-artifacts fetcher against a real tracking server's artifact proxy."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from pointercache.adapters.pace import Pace
from pointercache.errors import ArtifactNotFound, ForbiddenURI, Stalled, TooLarge
from pointercache.model.candidate import Selector
from pointercache.model.digest import listed_digest, tree_digest
from pointercache.resolve.sources import SourceOptions
from pointercache.resolve.sources.mlflow import MlflowSource
from pointercache.stage.fetchers import FetchOptions, FetchResult, open_fetcher
from pointercache.stage.fetchers.mlflow import MAX_LISTINGS
from tests.mlflow_server import MlflowServer, mlmodel_text
from tests.stage.mlflow_proxy import Proxy, start_proxy

FILES = {
    "model.pkl": b"\x80\x04weights" * 1000,
    "conda.yaml": b"name: env\n",
    "code/featurize.py": b"def f(x):\n    return x\n",
    "data/deep/er/table.bin": bytes(range(256)) * 64,
    "name with space.txt": b"spaces are fine",
}


def expected_tree_digest(files: dict[str, bytes]) -> str:
    """The documented digest: sha256 of "<sha256>  <relpath>\\n" lines sorted by path bytes."""
    lines = [
        f"{hashlib.sha256(data).hexdigest()}  {rel}\n".encode()
        for rel, data in sorted(files.items(), key=lambda kv: kv[0].encode())
    ]
    return "sha256:" + hashlib.sha256(b"".join(lines)).hexdigest()


class RefuseAll:
    """An allow policy that refuses everything (stands in for a restrictive allowlist)."""

    def check(self, uri: str) -> None:
        raise ForbiddenURI(f"{uri} is not allowlisted")


@pytest.fixture
async def source(mlflow: MlflowServer) -> AsyncIterator[MlflowSource]:
    """An MLflow source for the shared server."""
    src = MlflowSource(mlflow.registry_uri, SourceOptions(timeout=10.0))
    try:
        yield src
    finally:
        await src.aclose()


async def test_fetch_directory_end_to_end(
    mlflow: MlflowServer, source: MlflowSource, tmp_path: Path
) -> None:
    """A registered model directory arrives whole, with the tree digest of the uploaded files."""
    model = mlflow.new_model()
    inputs = [{"type": "long", "name": "n", "required": True}]
    version = mlflow.create_version(model, FILES, inputs=inputs)
    mlflow.set_alias(model, "production", version)
    candidate = await source.resolve(model, Selector.parse("alias:production"))
    fetcher = open_fetcher(candidate.uri, FetchOptions())
    try:
        result = await fetcher.fetch(candidate.uri, tmp_path / "model")
    finally:
        await fetcher.aclose()
    uploaded = {**FILES, "MLmodel": mlmodel_text(inputs, [{"type": "double"}]).encode()}
    digest, size = tree_digest(tmp_path / "model")
    assert result.is_dir
    assert result.files is not None
    assert listed_digest(tmp_path / "model", result.files) == (digest, size)
    assert digest == expected_tree_digest(uploaded)
    assert size == result.size_bytes == sum(len(d) for d in uploaded.values())
    assert (tmp_path / "model" / "data/deep/er/table.bin").read_bytes() == FILES[
        "data/deep/er/table.bin"
    ]


async def test_fetch_single_file(mlflow: MlflowServer, tmp_path: Path) -> None:
    """A URI naming one file fetches that file, with its sha256."""
    _, root = mlflow.new_run()
    mlflow.upload(f"{root}/single/model.onnx", b"onnx-bytes")
    uri = f"mlflow-artifacts+http://127.0.0.1:{mlflow.port}/{root}/single/model.onnx"
    fetcher = open_fetcher(uri, FetchOptions())
    try:
        result = await fetcher.fetch(uri, tmp_path / "model.onnx")
    finally:
        await fetcher.aclose()
    assert not result.is_dir
    assert (tmp_path / "model.onnx").read_bytes() == b"onnx-bytes"
    assert result.sha256 == hashlib.sha256(b"onnx-bytes").hexdigest()


async def test_missing_artifact_is_not_found(mlflow: MlflowServer, tmp_path: Path) -> None:
    """A path with nothing behind it is ArtifactNotFound and writes nothing."""
    uri = f"mlflow-artifacts+http://127.0.0.1:{mlflow.port}/0/nothing/here"
    fetcher = open_fetcher(uri, FetchOptions())
    try:
        with pytest.raises(ArtifactNotFound):
            await fetcher.fetch(uri, tmp_path / "model")
    finally:
        await fetcher.aclose()
    assert not (tmp_path / "model").exists()


async def test_allowlist_is_checked_before_any_request(
    mlflow: MlflowServer, tmp_path: Path
) -> None:
    """A URI the allow policy refuses is ForbiddenURI, and nothing is written."""
    uri = f"mlflow-artifacts+http://127.0.0.1:{mlflow.port}/0/x/model"
    fetcher = open_fetcher(uri, FetchOptions(allow=RefuseAll()))
    try:
        with pytest.raises(ForbiddenURI):
            await fetcher.fetch(uri, tmp_path / "model")
    finally:
        await fetcher.aclose()
    assert not (tmp_path / "model").exists()


async def test_prestage_enforces_the_digest_tag(
    mlflow: MlflowServer, source: MlflowSource, tmp_path: Path
) -> None:
    """Through the stage layer, a matching digest tag verifies and a wrong one is refused."""
    from pointercache.errors import IntegrityError
    from pointercache.stage.prestage import prestage

    model = mlflow.new_model()
    version = mlflow.create_version(model, {"w.bin": b"weights"})
    files = {"w.bin": b"weights", "MLmodel": mlmodel_text(None, [{"type": "double"}]).encode()}
    good = expected_tree_digest(files)
    mlflow.set_version_tag(model, version, "pointercache.digest", good)
    candidate = await source.resolve(model, Selector.parse(f"version:{version}"))
    staged = await prestage(candidate, tmp_path / "ok", fetch=FetchOptions(), cache=None)
    assert staged.digest == good
    assert (staged.path / "w.bin").read_bytes() == b"weights"

    bad = "sha256:" + "0" * 64
    mlflow.set_version_tag(model, version, "pointercache.digest", bad)
    candidate = await source.resolve(model, Selector.parse(f"version:{version}"))
    with pytest.raises(IntegrityError):
        await prestage(candidate, tmp_path / "bad", fetch=FetchOptions(), cache=None)


@pytest.fixture
async def proxy() -> AsyncIterator[Proxy]:
    """A misbehaving MLflow artifact proxy of this test alone."""
    server = Proxy()
    runner = await start_proxy(server)
    try:
        yield server
    finally:
        await runner.cleanup()


async def _fetch_from(proxy: Proxy, tmp_path: Path, **kw: Any) -> FetchResult:
    uri = proxy.uri("1/run/artifacts/model")
    fetcher = open_fetcher(uri, FetchOptions(**kw))
    try:
        return await fetcher.fetch(uri, tmp_path / "model")
    finally:
        await fetcher.aclose()


def _entries(*names: str, dirs: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    files = [{"path": n, "is_dir": False, "file_size": 3} for n in names]
    return files + [{"path": d, "is_dir": True} for d in dirs]


LISTINGS: dict[str, Callable[[str], list[dict[str, Any]]]] = {
    # the same file twice in one listing
    "duplicate": lambda path: _entries("w.bin", "w.bin"),
    # "code" is a file and a directory in the same listing
    "file and directory": lambda path: (
        _entries("code", dirs=("code",)) if path.endswith("model") else _entries("f.py")
    ),
    # a directory lists a name that a file already took at another level ("a/b" then "a")
    "file above a file": lambda path: (
        _entries("a/b", dirs=("a",)) if path.endswith("model") else _entries("b")
    ),
}


@pytest.mark.parametrize("case", LISTINGS)
async def test_inconsistent_listings_are_refused_before_any_download(
    proxy: Proxy, tmp_path: Path, case: str
) -> None:
    """A listing with a name twice, or a name both file and directory, is ForbiddenURI."""
    proxy.listings = LISTINGS[case]
    with pytest.raises(ForbiddenURI, match="listed"):
        await _fetch_from(proxy, tmp_path)
    assert proxy.downloads == []
    assert not (tmp_path / "model").exists()


async def test_a_wide_deep_listing_stops_at_the_fan_out_bound(proxy: Proxy, tmp_path: Path) -> None:
    """300 directories per level, 3 deep (27 million leaves): at most MAX_LISTINGS requests."""

    def wide(path: str) -> list[dict[str, Any]]:
        depth = path.count("/") - 3  # "1/run/artifacts/model" is depth 0
        return [] if depth >= 3 else _entries(dirs=tuple(f"d{i}" for i in range(300)))

    proxy.listings = wide
    with pytest.raises(TooLarge, match="artifact directories"):
        await _fetch_from(proxy, tmp_path)
    assert proxy.listed == MAX_LISTINGS
    assert proxy.downloads == []


async def test_a_trickling_proxy_in_front_of_mlflow_stalls(
    mlflow: MlflowServer, proxy: Proxy, tmp_path: Path
) -> None:
    """A real MLflow behind a proxy that trickles the download: Stalled, nothing staged."""
    _, root = mlflow.new_run()
    mlflow.upload(f"{root}/model/w.bin", b"w" * 200_000)
    proxy.upstream = f"http://127.0.0.1:{mlflow.port}"
    proxy.trickle = True
    uri = proxy.uri(f"{root}/model")
    fetcher = open_fetcher(uri, FetchOptions(pace=Pace(min_rate=64 * 1024, window=1.0)))
    try:
        with pytest.raises(Stalled, match=r"w\.bin"):
            await fetcher.fetch(uri, tmp_path / "model")
    finally:
        await fetcher.aclose()
    assert proxy.downloads == [f"{root}/model/w.bin"]  # a stall is not retried at once
    assert not (tmp_path / "model").exists()
