"""The file:// fetcher: trees and single files, refusals, limits, and the memory twin."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from pointercache.errors import (
    ArtifactNotFound,
    FetchError,
    FetchUnavailable,
    ForbiddenURI,
    TooLarge,
)
from pointercache.model.digest import listed_digest, tree_digest
from pointercache.stage.fetchers import FetchOptions, open_fetcher
from pointercache.stage.fetchers.file import FileFetcher
from pointercache.stage.fetchers.memory import MemoryFetcher
from tests.helpers import mount_tmpfs, unmount


class PrefixPolicy:
    """Our own AllowPolicy twin: allows URIs under one prefix and records every check."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.checked: list[str] = []

    def check(self, uri: str) -> None:
        self.checked.append(uri)
        if not uri.startswith(self.prefix):
            raise ForbiddenURI(f"{uri} is not allowlisted")


def _tree(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "MLmodel").write_text("flavors: {}\n")
    (root / "sub" / "weights.bin").write_bytes(b"\x00\x01" * 1000)
    return root


async def test_copies_a_directory_tree(tmp_path: Path) -> None:
    """A directory artifact is copied file by file into dest, each file hashed while copied."""
    src = _tree(tmp_path / "src")
    fetcher = open_fetcher(src.as_uri(), FetchOptions())
    result = await fetcher.fetch(src.as_uri(), tmp_path / "dest")
    assert result.is_dir
    assert result.size_bytes == 2000 + len("flavors: {}\n")
    assert (tmp_path / "dest" / "sub" / "weights.bin").read_bytes() == b"\x00\x01" * 1000
    assert (tmp_path / "dest" / "MLmodel").read_text() == "flavors: {}\n"
    assert result.files is not None
    assert listed_digest(tmp_path / "dest", result.files) == tree_digest(src)


async def test_copies_a_single_file_and_hashes_it(tmp_path: Path) -> None:
    """A single-file artifact is copied and its sha256 computed while copying."""
    src = tmp_path / "model.onnx"
    src.write_bytes(b"onnx" * 100)
    seen: list[tuple[int, int | None]] = []
    fetcher = FileFetcher(FetchOptions(progress=lambda done, total: seen.append((done, total))))
    result = await fetcher.fetch(src.as_uri(), tmp_path / "dest")
    assert not result.is_dir
    assert result.sha256 == hashlib.sha256(b"onnx" * 100).hexdigest()
    assert (tmp_path / "dest").read_bytes() == b"onnx" * 100
    assert seen[-1] == (400, 400)


async def test_missing_path_is_artifact_not_found(tmp_path: Path) -> None:
    """A path that does not exist raises ArtifactNotFound and leaves no dest behind."""
    with pytest.raises(ArtifactNotFound):
        await FileFetcher().fetch((tmp_path / "nope").as_uri(), tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


async def test_symlink_inside_the_tree_is_refused(tmp_path: Path) -> None:
    """A symlink inside an artifact (to outside its root) is refused and the copy removed."""
    secret = tmp_path / "secret.txt"
    secret.write_text("do not copy")
    src = _tree(tmp_path / "src")
    (src / "sub" / "escape").symlink_to(secret)
    with pytest.raises(ForbiddenURI, match="sub/escape is a symlink"):
        await FileFetcher().fetch(src.as_uri(), tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


async def test_symlinked_directory_inside_the_tree_is_refused(tmp_path: Path) -> None:
    """A directory symlink inside an artifact is refused as well."""
    outside = _tree(tmp_path / "outside")
    src = _tree(tmp_path / "src")
    (src / "more").symlink_to(outside, target_is_directory=True)
    with pytest.raises(ForbiddenURI, match="more is a symlink"):
        await FileFetcher().fetch(src.as_uri(), tmp_path / "dest")


async def test_fifo_inside_the_tree_is_refused(tmp_path: Path) -> None:
    """Devices, FIFOs and sockets are not artifact content."""
    src = _tree(tmp_path / "src")
    os.mkfifo(src / "pipe")
    with pytest.raises(ForbiddenURI, match="pipe is a device, FIFO or socket"):
        await FileFetcher().fetch(src.as_uri(), tmp_path / "dest")


async def test_root_symlink_escaping_the_allowlist_is_refused(tmp_path: Path) -> None:
    """An allowed path that resolves through a symlink to outside the allowlist is refused."""
    allowed = tmp_path / "models"
    allowed.mkdir()
    outside = _tree(tmp_path / "elsewhere")
    (allowed / "m").symlink_to(outside, target_is_directory=True)
    policy = PrefixPolicy(allowed.as_uri() + "/")
    fetcher = FileFetcher(FetchOptions(allow=policy))
    with pytest.raises(ForbiddenURI, match="not allowlisted"):
        await fetcher.fetch((allowed / "m").as_uri(), tmp_path / "dest")
    assert policy.checked == [(allowed / "m").as_uri(), outside.as_uri()]
    assert not (tmp_path / "dest").exists()


async def test_allowlist_is_applied_before_reading(tmp_path: Path) -> None:
    """A URI the policy refuses is never read."""
    src = _tree(tmp_path / "src")
    fetcher = FileFetcher(FetchOptions(allow=PrefixPolicy("file:///elsewhere/")))
    with pytest.raises(ForbiddenURI):
        await fetcher.fetch(src.as_uri(), tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


async def test_over_the_size_limit_is_too_large(tmp_path: Path) -> None:
    """A tree over max_bytes raises TooLarge and the partial copy is removed."""
    src = _tree(tmp_path / "src")
    with pytest.raises(TooLarge):
        await FileFetcher(FetchOptions(max_bytes=1500)).fetch(src.as_uri(), tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


async def test_memory_fetcher_writes_trees_and_refuses_escaping_entries(tmp_path: Path) -> None:
    """The memory twin writes files and trees, records fetches, and refuses '..' entries."""
    objects: dict[str, bytes | dict[str, bytes]] = {
        "memory://a": b"single",
        "memory://b": {"x/y.bin": b"1", "z": b"22"},
        "memory://evil": {"../out": b"x"},
    }
    fetcher = MemoryFetcher(objects=objects)
    assert not (await fetcher.fetch("memory://a", tmp_path / "a")).is_dir
    result = await fetcher.fetch("memory://b", tmp_path / "b")
    assert (result.is_dir, result.size_bytes) == (True, 3)
    assert (tmp_path / "b" / "x" / "y.bin").read_bytes() == b"1"
    with pytest.raises(ForbiddenURI):
        await fetcher.fetch("memory://evil", tmp_path / "evil")
    assert not (tmp_path / "out").exists()
    with pytest.raises(ArtifactNotFound):
        await fetcher.fetch("memory://missing", tmp_path / "m")
    assert fetcher.fetched == ["memory://a", "memory://b", "memory://evil", "memory://missing"]


async def test_a_full_staging_disk_is_a_fetch_error_naming_enospc(tmp_path: Path) -> None:
    """Copying a 4 MiB file onto a 1 MiB tmpfs: a FetchError naming ENOSPC, nothing left."""
    mnt = tmp_path / "small"
    why = mount_tmpfs(mnt, 1 << 20)
    if why:
        pytest.skip(f"{why}; tests/volume/test_diskfull.py injects the same failure")
    try:
        src = tmp_path / "big.bin"
        src.write_bytes(os.urandom(4 << 20))
        with pytest.raises(FetchError, match="ENOSPC") as info:
            await FileFetcher(FetchOptions()).fetch(src.as_uri(), mnt / "dest")
        assert not isinstance(info.value, FetchUnavailable)  # a full disk is not worth a retry
        assert list(mnt.iterdir()) == []
    finally:
        unmount(mnt)
