"""Digests match what users compute with coreutils, and artifacts hold only files and dirs."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pointercache.errors import IntegrityError
from pointercache.model.digest import (
    FileHash,
    StreamHasher,
    file_sha256,
    listed_digest,
    tree_digest,
)

PIPELINE = "find . -type f -printf '%P\\n' | LC_ALL=C sort | xargs -d '\\n' sha256sum | sha256sum"
SAFE_PIPELINE = PIPELINE.replace("sha256sum |", "sha256sum -- |")
"""Same output; ``--`` keeps a file named like an option (``-0``) from being parsed as one."""


def _coreutils_tree_digest(path: Path, pipeline: str = PIPELINE) -> str:
    out = subprocess.run(
        ["bash", "-c", f"set -o pipefail; {pipeline}"],
        cwd=path,
        check=True,
        capture_output=True,
        env={"PATH": os.environ["PATH"], "LC_ALL": "C"},
    ).stdout
    return "sha256:" + out.split()[0].decode()


def _awkward_tree(root: Path) -> int:
    """Write nested dirs, spaces, non-ASCII, non-UTF-8, hidden and escaped names; return bytes."""
    files: dict[bytes, bytes] = {
        b"MLmodel": b"flavors: {}\n",
        b"weights/layer 1.bin": os.urandom(70_000),
        b"weights/shards/\xc3\xa9t\xc3\xa9 \xe2\x9c\x93.bin": b"accented",
        b"weights/shards/Z-upper": b"sorts before lowercase in C",
        b"weights/shards/a-lower": b"",
        b".hidden/conf ig.yaml": b"a: 1\n",
        b"latin1-\xe9.txt": b"not utf-8 in the name",
        b"back\\slash": b"escaped by sha256sum",
        b"carriage\rreturn": b"escaped too",
        b"deep/er/and/deeper/x": b"x" * 3,
    }
    for rel, data in files.items():
        full = root / os.fsdecode(rel)  # surrogateescape keeps the non-UTF-8 bytes
        full.parent.mkdir(parents=True, exist_ok=True)
        full.write_bytes(data)
    (root / "empty dir").mkdir()
    return sum(len(d) for d in files.values())


def test_tree_digest_equals_the_coreutils_pipeline(tmp_path: Path) -> None:
    """A directory's digest is exactly what the documented find|sort|sha256sum pipeline prints."""
    total = _awkward_tree(tmp_path)
    digest, size = tree_digest(tmp_path)
    assert digest == _coreutils_tree_digest(tmp_path)
    assert size == total


def test_tree_digest_changes_when_one_byte_or_one_name_changes(tmp_path: Path) -> None:
    """Renaming a file or flipping one byte gives a different digest."""
    _awkward_tree(tmp_path)
    before, _ = tree_digest(tmp_path)
    (tmp_path / "MLmodel").write_bytes(b"flavors: {}\n".replace(b"{", b"["))
    flipped, _ = tree_digest(tmp_path)
    (tmp_path / "MLmodel").rename(tmp_path / "MLmodel2")
    renamed, _ = tree_digest(tmp_path)
    assert len({before, flipped, renamed}) == 3
    assert renamed == _coreutils_tree_digest(tmp_path)


def test_single_file_digest_equals_sha256sum(tmp_path: Path) -> None:
    """A single-file artifact's digest is sha256sum of its bytes, and its size is its length."""
    path = tmp_path / "model.onnx"
    path.write_bytes(os.urandom(3 * (1 << 20) + 17))  # spans several read chunks
    out = subprocess.run(["sha256sum", str(path)], check=True, capture_output=True).stdout
    assert tree_digest(path) == ("sha256:" + out.split()[0].decode(), path.stat().st_size)
    assert file_sha256(path) == out.split()[0].decode()


def test_stream_hasher_matches_file_digest(tmp_path: Path) -> None:
    """Hashing a stream in chunks gives the same digest and size as hashing the file."""
    data = os.urandom(200_000)
    (tmp_path / "f").write_bytes(data)
    hasher = StreamHasher()
    for start in range(0, len(data), 7_000):
        hasher.update(data[start : start + 7_000])
    assert hasher.hexdigest() == file_sha256(tmp_path / "f") == hashlib.sha256(data).hexdigest()
    assert hasher.digest() == "sha256:" + hasher.hexdigest()
    assert hasher.size == len(data)


def test_empty_directory_digest_is_sha256_of_nothing(tmp_path: Path) -> None:
    """An artifact directory with no files hashes zero lines."""
    assert tree_digest(tmp_path) == ("sha256:" + hashlib.sha256(b"").hexdigest(), 0)


@pytest.mark.parametrize("kind", ["symlink", "fifo", "dangling"])
def test_non_regular_files_are_an_integrity_error(tmp_path: Path, kind: str) -> None:
    """A symlink, dangling link or FIFO inside an artifact is rejected, naming the entry."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "real").write_bytes(b"x")
    odd = tmp_path / "sub" / "odd"
    if kind == "symlink":
        odd.symlink_to("real")
    elif kind == "dangling":
        odd.symlink_to("/nonexistent")
    else:
        os.mkfifo(odd)
    with pytest.raises(IntegrityError, match="sub/odd"):
        tree_digest(tmp_path)


def test_newline_in_a_file_name_is_an_integrity_error(tmp_path: Path) -> None:
    """A name the coreutils pipeline cannot represent is rejected instead of hashed differently."""
    (tmp_path / "two\nlines").write_bytes(b"x")
    with pytest.raises(IntegrityError, match="newline"):
        tree_digest(tmp_path)


_NAME = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00\n"),
    min_size=1,
    max_size=12,
).filter(lambda n: n not in {".", ".."} and len(n.encode()) < 200)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    tree=st.dictionaries(
        st.lists(_NAME, min_size=1, max_size=3).map(tuple), st.binary(max_size=64), max_size=8
    )
)
def test_random_trees_match_the_coreutils_pipeline(tmp_path_factory, tree) -> None:
    """For arbitrary names and nesting, tree_digest agrees with coreutils byte for byte."""
    root = tmp_path_factory.mktemp("tree")
    (root / "anchor").write_bytes(b"")  # xargs runs sha256sum on stdin when given no names
    for parts, data in tree.items():
        if parts == ("-",):
            continue  # sha256sum reads standard input for a name "-": the recipe's one gap
        path = root.joinpath(*parts)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        except (FileExistsError, IsADirectoryError, NotADirectoryError):
            continue  # a name used both as a file and as a directory: skip that entry
    assert tree_digest(root)[0] == _coreutils_tree_digest(root, SAFE_PIPELINE)


def _hashes_of(root: Path) -> dict[bytes, FileHash]:
    """Each file's hash and size, as a fetcher records them while writing."""
    return {
        os.fsencode(p.relative_to(root).as_posix()): FileHash(file_sha256(p), p.stat().st_size)
        for p in root.rglob("*")
        if p.is_file()
    }


def _listed_tree(root: Path) -> Path:
    (root / "weights" / "shards").mkdir(parents=True)
    (root / "MLmodel").write_text("flavors: {}\n")
    (root / "weights" / "shards" / "0.bin").write_bytes(os.urandom(3000))
    (root / "back\\slash.txt").write_bytes(b"escaped line")
    (root / "b").write_bytes(b"")
    (root / "b.txt").write_bytes(b"sorted by bytes: b < b.txt < b/")
    return root


def test_listed_digest_equals_the_tree_digest(tmp_path: Path) -> None:
    """A digest assembled from per-file hashes equals the digest that re-reads every byte."""
    root = _listed_tree(tmp_path / "a")
    assert listed_digest(root, _hashes_of(root)) == tree_digest(root)


@pytest.mark.parametrize("change", ["added", "removed", "resized", "renamed"])
def test_listed_digest_is_none_when_the_tree_differs_from_the_list(
    tmp_path: Path, change: str
) -> None:
    """A file added, removed, resized or renamed after hashing sends the caller to a re-read."""
    root = _listed_tree(tmp_path / "a")
    hashes = _hashes_of(root)
    target = root / "weights" / "shards" / "0.bin"
    if change == "added":
        (root / "extra").write_bytes(b"x")
    elif change == "removed":
        target.unlink()
    elif change == "resized":
        target.write_bytes(b"short")
    else:
        target.rename(target.with_name("1.bin"))
    assert listed_digest(root, hashes) is None


def test_listed_digest_refuses_a_symlink_in_the_tree(tmp_path: Path) -> None:
    """A symlink that appeared in a listed tree is an IntegrityError, as in a re-read."""
    root = _listed_tree(tmp_path / "a")
    hashes = _hashes_of(root)
    (root / "weights" / "link").symlink_to("/etc/passwd")
    with pytest.raises(IntegrityError):
        listed_digest(root, hashes)
