"""Durable write helpers: all-or-nothing replacement, link swaps and tree copies."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from pointercache.volume.fsutil import (
    MAX_COPY_DEPTH,
    TMP_PREFIX,
    atomic_symlink,
    atomic_write_bytes,
    copy_tree,
    copy_tree_or_link,
    sync_tree,
    syncfs,
)


def _fail(fd: int, data: memoryview) -> int:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_atomic_write_replaces_the_whole_file_and_leaves_no_temp(tmp_path: Path) -> None:
    """The new content replaces the old one and no temporary file remains."""
    target = tmp_path / "pointer.json"
    target.write_bytes(b"old")
    atomic_write_bytes(target, b"new content")
    assert target.read_bytes() == b"new content"
    assert [p.name for p in tmp_path.iterdir()] == ["pointer.json"]


def test_a_failed_atomic_write_keeps_the_old_file(tmp_path: Path) -> None:
    """If writing fails (a full disk), the old content stays and the temp file is removed."""
    target = tmp_path / "pointer.json"
    target.write_bytes(b"old")
    with pytest.raises(OSError) as info:
        atomic_write_bytes(target, b"new", write=_fail)
    assert info.value.errno == errno.ENOSPC
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["pointer.json"]


def test_atomic_symlink_swaps_the_target(tmp_path: Path) -> None:
    """A link is re-pointed by rename, leaving no temp link behind."""
    link = tmp_path / "current"
    atomic_symlink("versions/a", link)
    atomic_symlink("versions/b", link)
    assert link.readlink() == Path("versions/b")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(TMP_PREFIX)]


def test_copy_tree_hardlinks_on_the_same_filesystem(tmp_path: Path) -> None:
    """Files are hard links (same inode) when source and destination share a filesystem."""
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "w.bin").write_bytes(b"weights")
    copy_tree_or_link(src, tmp_path / "dst")
    assert (tmp_path / "dst" / "sub" / "w.bin").stat().st_ino == (
        src / "sub" / "w.bin"
    ).stat().st_ino


def test_copy_tree_with_a_writer_copies_bytes(tmp_path: Path) -> None:
    """With an explicit writer the files are real copies with the same bytes."""
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "w.bin").write_bytes(os.urandom(3 << 20))
    written: list[int] = []

    def writer(fd: int, data: memoryview) -> int:
        written.append(len(data))
        return os.write(fd, data)

    copy_tree_or_link(src, tmp_path / "dst", write=writer)
    copied = tmp_path / "dst" / "sub" / "w.bin"
    assert copied.read_bytes() == (src / "sub" / "w.bin").read_bytes()
    assert copied.stat().st_ino != (src / "sub" / "w.bin").stat().st_ino
    assert sum(written) == 3 << 20


def test_copy_tree_refuses_symlinks(tmp_path: Path) -> None:
    """An artifact tree holding a symlink is not copied (it could point outside the artifact)."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "escape").symlink_to("/etc/passwd")
    with pytest.raises(OSError, match="not a regular file"):
        copy_tree_or_link(src, tmp_path / "dst")


def _tree(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "MLmodel").write_bytes(b"flavors: {}\n")
    (root / "sub" / "w.bin").write_bytes(os.urandom(1 << 20))
    return root


def test_copy_tree_never_shares_an_inode(tmp_path: Path) -> None:
    """copy_tree makes copies on the same filesystem too: a later write to src never reaches dst."""
    src = _tree(tmp_path / "src")
    copy_tree(src, tmp_path / "dst")
    for rel in ("MLmodel", "sub/w.bin"):
        copied = tmp_path / "dst" / rel
        assert copied.read_bytes() == (src / rel).read_bytes()
        assert copied.stat().st_ino != (src / rel).stat().st_ino
    with (src / "sub" / "w.bin").open("r+b") as out:
        out.write(b"rewritten in place")
    assert (tmp_path / "dst" / "sub" / "w.bin").read_bytes()[:18] != b"rewritten in place"


def test_copy_tree_of_a_single_file(tmp_path: Path) -> None:
    """A single-file artifact is copied the same way."""
    src = tmp_path / "model.onnx"
    src.write_bytes(b"onnx" * 1000)
    copy_tree(src, tmp_path / "copy.onnx")
    assert (tmp_path / "copy.onnx").read_bytes() == b"onnx" * 1000
    assert (tmp_path / "copy.onnx").stat().st_ino != src.stat().st_ino


@pytest.mark.parametrize("where", ["top", "inner-file", "inner-dir"])
def test_copy_tree_never_follows_a_symlink(tmp_path: Path, where: str) -> None:
    """A symlink anywhere in an untrusted source is refused, never read through."""
    target = _tree(tmp_path / "elsewhere")
    src = tmp_path / "src"
    if where == "top":
        src.symlink_to(target, target_is_directory=True)
    else:
        _tree(src)
        if where == "inner-file":
            (src / "zero").symlink_to("/dev/zero")
        else:
            (src / "sub" / "d").symlink_to(target, target_is_directory=True)
    with pytest.raises(OSError) as info:
        copy_tree(src, tmp_path / "dst")
    assert info.value.errno == errno.EINVAL


def test_copy_tree_refuses_a_fifo_without_blocking(tmp_path: Path) -> None:
    """A FIFO planted in the source is refused at once (O_NONBLOCK; nobody writes to it)."""
    src = _tree(tmp_path / "src")
    os.mkfifo(src / "sub" / "pipe")
    with pytest.raises(OSError) as info:
        copy_tree(src, tmp_path / "dst")
    assert info.value.errno == errno.EINVAL


def test_copy_tree_is_bounded(tmp_path: Path) -> None:
    """More bytes than allowed, or a tree deeper than MAX_COPY_DEPTH, is EFBIG."""
    src = _tree(tmp_path / "src")
    with pytest.raises(OSError) as info:
        copy_tree(src, tmp_path / "dst", max_bytes=(1 << 20) - 1)
    assert info.value.errno == errno.EFBIG
    deep = tmp_path / "deep"
    (deep / Path(*["d"] * (MAX_COPY_DEPTH + 2))).mkdir(parents=True)
    with pytest.raises(OSError) as info:
        copy_tree(deep, tmp_path / "dst2")
    assert info.value.errno == errno.EFBIG


def test_syncfs_flushes_the_filesystem_of_a_tree_in_one_call(tmp_path: Path) -> None:
    """On Linux a tree is made durable by one syncfs(2) of its filesystem, from libc."""
    (tmp_path / "tree" / "sub").mkdir(parents=True)
    (tmp_path / "tree" / "sub" / "w.bin").write_bytes(b"weights")
    assert syncfs(tmp_path / "tree") is True
    assert syncfs(tmp_path / "tree" / "sub" / "w.bin") is True
    sync_tree(tmp_path / "tree")
    sync_tree(tmp_path / "tree" / "sub" / "w.bin")


def test_syncing_a_missing_tree_is_an_error(tmp_path: Path) -> None:
    """A tree that vanished before its sync raises rather than counting as durable."""
    with pytest.raises(FileNotFoundError):
        sync_tree(tmp_path / "gone")
