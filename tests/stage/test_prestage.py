"""prestage: cache by digest, fetch, extract, verify (deleting what fails), cache the result."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import orjson
import pytest

from pointercache.errors import ArtifactNotFound, ForbiddenURI, IntegrityError
from pointercache.model.candidate import Candidate
from pointercache.model.digest import FileHash, assemble, tree_digest
from pointercache.stage.fetchers import FetchOptions, FetchResult
from pointercache.stage.fetchers.memory import MemoryFetcher
from pointercache.stage.prestage import prestage
from pointercache.volume.cas import NodeCache

TREE = {"MLmodel": b"flavors: {}\n", "data/model.pkl": b"\x80\x04" * 512}


def _digest_of(tmp_path: Path, files: dict[str, bytes]) -> tuple[str, int]:
    root = tmp_path / "reference"
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return tree_digest(root)


def _cand(
    uri: str = "memory://m/8", digest: str | None = None, size: int | None = None
) -> Candidate:
    return Candidate(model="recommender", version="8", uri=uri, digest=digest, size_bytes=size)


async def test_fetches_verifies_and_caches(tmp_path: Path) -> None:
    """A fetched artifact is verified, staged at staging/model and put into the node cache."""
    digest, size = _digest_of(tmp_path, TREE)
    fetcher = MemoryFetcher(objects={"memory://m/8": TREE})
    cache = NodeCache(tmp_path / "lkg")
    staged = await prestage(
        _cand(digest=digest, size=size),
        tmp_path / "s1",
        fetch=FetchOptions(),
        cache=cache,
        fetcher=fetcher,
    )
    assert (staged.path, staged.digest, staged.size_bytes) == (
        tmp_path / "s1" / "model",
        digest,
        size,
    )
    assert not staged.from_cache
    assert cache.lookup(digest) is not None
    again = await prestage(
        _cand(digest=digest), tmp_path / "s2", fetch=FetchOptions(), cache=cache, fetcher=fetcher
    )
    assert again.from_cache
    assert tree_digest(again.path) == (digest, size)
    assert fetcher.fetched == ["memory://m/8"]


async def test_digest_mismatch_deletes_the_staged_bytes(tmp_path: Path) -> None:
    """A digest differing from the promise raises IntegrityError; nothing stays staged or cached."""
    fetcher = MemoryFetcher(objects={"memory://m/8": TREE})
    cache = NodeCache(tmp_path / "lkg")
    wrong = "sha256:" + "0" * 64
    with pytest.raises(IntegrityError, match="differs from promised"):
        await prestage(
            _cand(digest=wrong), tmp_path / "s", fetch=FetchOptions(), cache=cache, fetcher=fetcher
        )
    assert list((tmp_path / "s").iterdir()) == []
    assert cache.entries() == []


async def test_size_mismatch_deletes_the_staged_bytes(tmp_path: Path) -> None:
    """A size that differs from the promise raises IntegrityError and removes the staged copy."""
    fetcher = MemoryFetcher(objects={"memory://m/8": TREE})
    with pytest.raises(IntegrityError, match="bytes differs from promised 5"):
        await prestage(
            _cand(size=5), tmp_path / "s", fetch=FetchOptions(), cache=None, fetcher=fetcher
        )
    assert list((tmp_path / "s").iterdir()) == []


async def test_candidate_without_digest_gets_the_computed_one(tmp_path: Path) -> None:
    """Without a promised digest, the digest of what was staged is computed and cached."""
    digest, size = _digest_of(tmp_path, TREE)
    cache = NodeCache(tmp_path / "lkg")
    staged = await prestage(
        _cand(),
        tmp_path / "s",
        fetch=FetchOptions(),
        cache=cache,
        fetcher=MemoryFetcher(objects={"memory://m/8": TREE}),
    )
    assert (staged.digest, staged.size_bytes) == (digest, size)
    assert cache.lookup(digest) is not None


async def test_missing_artifact_leaves_nothing_staged(tmp_path: Path) -> None:
    """An artifact that does not exist raises ArtifactNotFound and stages nothing."""
    with pytest.raises(ArtifactNotFound):
        await prestage(
            _cand(uri=(tmp_path / "absent").as_uri()),
            tmp_path / "s",
            fetch=FetchOptions(),
            cache=NodeCache(tmp_path / "lkg"),
        )
    assert list((tmp_path / "s").iterdir()) == []


async def test_artifact_escaping_its_root_is_refused(tmp_path: Path) -> None:
    """A file:// artifact with a symlink to outside its root is refused before anything is used."""
    src = tmp_path / "models" / "8"
    src.mkdir(parents=True)
    (src / "MLmodel").write_text("x")
    (tmp_path / "passwd").write_text("secret")
    (src / "weights").symlink_to(tmp_path / "passwd")
    with pytest.raises(ForbiddenURI, match="symlink"):
        await prestage(
            _cand(uri=src.as_uri()),
            tmp_path / "s",
            fetch=FetchOptions(),
            cache=NodeCache(tmp_path / "lkg"),
        )
    assert list((tmp_path / "s").iterdir()) == []
    assert NodeCache(tmp_path / "lkg").entries() == []


async def test_damaged_cache_entry_is_deleted_and_fetched_again(tmp_path: Path) -> None:
    """A cache hit whose bytes no longer match is discarded and the origin fetched instead."""
    digest, _ = _digest_of(tmp_path, TREE)
    cache = NodeCache(tmp_path / "lkg")
    fetcher = MemoryFetcher(objects={"memory://m/8": TREE})
    await prestage(
        _cand(digest=digest), tmp_path / "s1", fetch=FetchOptions(), cache=cache, fetcher=fetcher
    )
    cached = cache.lookup(digest)
    assert cached is not None
    (cached / "MLmodel").unlink()
    (cached / "MLmodel").write_bytes(b"tampered")
    staged = await prestage(
        _cand(digest=digest), tmp_path / "s2", fetch=FetchOptions(), cache=cache, fetcher=fetcher
    )
    assert not staged.from_cache
    assert tree_digest(staged.path)[0] == digest
    assert fetcher.fetched == ["memory://m/8", "memory://m/8"]
    assert cache.verify(digest)


async def test_archive_uri_is_extracted_and_its_tree_verified(tmp_path: Path) -> None:
    """An archive URI is extracted; the digest promised is that of the extracted tree."""
    digest, size = _digest_of(tmp_path, TREE)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for rel, data in TREE.items():
            info = tarfile.TarInfo(rel)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    fetcher = MemoryFetcher(objects={"memory://m/model.tar.gz": buf.getvalue()})
    staged = await prestage(
        _cand(uri="memory://m/model.tar.gz", digest=digest, size=size),
        tmp_path / "s",
        fetch=FetchOptions(),
        cache=None,
        fetcher=fetcher,
    )
    assert staged.path.is_dir()
    assert (staged.path / "data" / "model.pkl").read_bytes() == TREE["data/model.pkl"]
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["model"]


async def test_an_archive_packed_with_its_folder_keeps_that_folder(tmp_path: Path) -> None:
    """``tar czf model.tgz model/``: served as model/model/...; the digest covers that folder."""
    packed = {f"model/{rel}": data for rel, data in TREE.items()}
    digest, size = _digest_of(tmp_path, packed)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for rel, data in packed.items():
            info = tarfile.TarInfo(rel)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    fetcher = MemoryFetcher(objects={"memory://m/model.tgz": buf.getvalue()})
    staged = await prestage(
        _cand(uri="memory://m/model.tgz", digest=digest, size=size),
        tmp_path / "s",
        fetch=FetchOptions(),
        cache=None,
        fetcher=fetcher,
    )
    assert sorted(p.name for p in staged.path.iterdir()) == ["model"]
    assert (staged.path / "model" / "MLmodel").read_bytes() == TREE["MLmodel"]
    assert staged.digest == digest


async def test_progress_is_logged_through_the_reporter(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With the scheme's own fetcher and no callback, prestage logs fetch-done with the bytes."""
    src = tmp_path / "model.bin"
    src.write_bytes(b"y" * 10)
    uri = src.as_uri()
    await prestage(_cand(uri=uri), tmp_path / "s", fetch=FetchOptions(), cache=None)
    events = [orjson.loads(line) for line in capsys.readouterr().err.splitlines()]
    done = [e for e in events if e["event"] == "fetch-done"]
    assert [(e["uri"], e["bytes"]) for e in done] == [(uri, 10)]


async def test_single_file_artifact_round_trips_through_the_cache(tmp_path: Path) -> None:
    """A single-file artifact is cached by its sha256 and served from the cache the second time."""
    src = tmp_path / "model.onnx"
    src.write_bytes(b"onnx-bytes" * 100)
    digest, size = tree_digest(src)
    cache = NodeCache(tmp_path / "lkg")
    first = await prestage(
        _cand(uri=src.as_uri(), digest=digest), tmp_path / "s1", fetch=FetchOptions(), cache=cache
    )
    src.unlink()  # the origin is gone: only the cache can serve it now
    second = await prestage(
        _cand(uri=src.as_uri(), digest=digest, size=size),
        tmp_path / "s2",
        fetch=FetchOptions(),
        cache=cache,
    )
    assert (first.from_cache, second.from_cache) == (False, True)
    assert second.path.read_bytes() == b"onnx-bytes" * 100


class _ListingFetcher(MemoryFetcher):
    """A memory twin that reports the per-file hashes it was told (honest or not)."""

    def __init__(self, tree: dict[str, bytes], hashes: dict[bytes, FileHash]) -> None:
        super().__init__(objects={"memory://m/8": tree})
        self.hashes = hashes

    async def fetch(self, uri: str, dest: Path) -> FetchResult:
        result = await super().fetch(uri, dest)
        return FetchResult(is_dir=True, size_bytes=result.size_bytes, files=self.hashes)


def _honest(tree: dict[str, bytes]) -> dict[bytes, FileHash]:
    return {
        rel.encode(): FileHash(hashlib.sha256(data).hexdigest(), len(data))
        for rel, data in tree.items()
    }


async def test_a_tree_digest_is_assembled_from_the_hashes_taken_while_writing(
    tmp_path: Path,
) -> None:
    """A directory's digest comes from the fetcher's per-file hashes, not a second read."""
    hashes = _honest(TREE)
    assert assemble((rel, h.sha256) for rel, h in hashes.items()) == _digest_of(tmp_path, TREE)[0]
    hashes[b"MLmodel"] = FileHash("0" * 64, len(TREE["MLmodel"]))  # what a re-read would not see
    staged = await prestage(
        _cand(),
        tmp_path / "s",
        fetch=FetchOptions(),
        cache=None,
        fetcher=_ListingFetcher(TREE, hashes),
    )
    assert staged.digest == assemble((rel, h.sha256) for rel, h in hashes.items())
    assert staged.digest != tree_digest(staged.path)[0]


async def test_a_tree_unlike_its_listing_is_hashed_from_disk(tmp_path: Path) -> None:
    """When the staged tree does not hold exactly the listed files, every byte is hashed."""
    hashes = _honest(TREE)
    del hashes[b"MLmodel"]
    staged = await prestage(
        _cand(),
        tmp_path / "s",
        fetch=FetchOptions(),
        cache=None,
        fetcher=_ListingFetcher(TREE, hashes),
    )
    assert (staged.digest, staged.size_bytes) == tree_digest(staged.path)
    assert (staged.digest, staged.size_bytes) == _digest_of(tmp_path, TREE)
