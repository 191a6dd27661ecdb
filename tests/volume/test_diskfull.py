"""A full volume while staging or installing: the published version stays intact; StoreError."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pointercache import reader
from pointercache.errors import StoreError
from pointercache.model.digest import tree_digest
from pointercache.volume.fsutil import TMP_PREFIX
from pointercache.volume.store import Store
from tests.volume.artifacts import make_pointer

VOLUME_BYTES = 2 << 20


class FullAfter:
    """An ``os.write`` stand-in that fails with ENOSPC once ``budget`` bytes are written."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.failures = 0

    def __call__(self, fd: int, data: memoryview) -> int:
        if len(data) > self.budget:
            self.failures += 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.budget -= len(data)
        return os.write(fd, data)


@pytest.fixture
def small_volume(tmp_path: Path) -> Iterator[Path]:
    """A real 2 MiB tmpfs; skipped only where this process may not mount one."""
    mnt = tmp_path / "vol"
    mnt.mkdir()
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mounting a 2 MiB tmpfs needs root and mount(8); the injected variant runs")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={VOLUME_BYTES}", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}); injected variant runs")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def _artifact(path: Path, size: int) -> Path:
    path.mkdir(parents=True)
    (path / "weights.bin").write_bytes(os.urandom(size))
    (path / "MLmodel").write_text("flavors: {}\n")
    return path


def _fill(path: Path) -> int | None:
    """Write zeros to ``path`` until the volume refuses; return the errno it refused with."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as exc:
        return exc.errno
    finally:
        os.close(fd)


def _publish_first(store: Store, src: Path) -> None:
    staged = store.stage(src)
    digest, size = tree_digest(staged)
    store.publish(store.install(staged, make_pointer("1", digest, size)))


def _assert_published_intact(store: Store) -> None:
    pointer = store.current()
    assert pointer is not None
    assert pointer.version == "1"
    assert tree_digest(store.root / "model") == (pointer.digest, pointer.size_bytes)
    loaded = reader.current(store.root)
    assert loaded is not None
    assert loaded.pointer == pointer
    assert list(store.staging_dir.iterdir()) == []
    assert not list(store.root.rglob(f"{TMP_PREFIX}*"))


def test_staging_on_a_full_tmpfs_fails_cleanly(small_volume: Path, tmp_path: Path) -> None:
    """Copying an artifact bigger than the free space raises StoreError(ENOSPC); v1 stays served."""
    store = Store(small_volume / "root")
    with store.lock():
        _publish_first(store, _artifact(tmp_path / "v1", 200_000))
        with pytest.raises(StoreError, match="ENOSPC") as info:
            store.stage(_artifact(tmp_path / "v2", 3 << 20))
        assert isinstance(info.value.__cause__, OSError)
        assert info.value.__cause__.errno == errno.ENOSPC
        _assert_published_intact(store)
        # the partial copy was removed, so the volume has room again for a normal version
        staged = store.stage(_artifact(tmp_path / "v3", 300_000))
        digest, size = tree_digest(staged)
        store.publish(store.install(staged, make_pointer("3", digest, size)))
        current = store.current()
        assert current is not None
        assert current.version == "3"


def test_installing_on_a_full_tmpfs_fails_cleanly(small_volume: Path, tmp_path: Path) -> None:
    """With the volume filled after staging, writing pointer.json fails; nothing half-installed."""
    store = Store(small_volume / "root")
    with store.lock():
        _publish_first(store, _artifact(tmp_path / "v1", 100_000))
        staged = store.stage(_artifact(tmp_path / "v2", 100_000))
        digest, size = tree_digest(staged)
        assert _fill(small_volume / "filler") == errno.ENOSPC
        with pytest.raises(StoreError, match="ENOSPC"):
            store.install(staged, make_pointer("2", digest, size))
        assert not (store.versions_dir / "crashy").joinpath(f"2-{digest[7:19]}").exists()
        (small_volume / "filler").unlink()
        _assert_published_intact(store)


def test_injected_full_disk_while_staging_keeps_the_published_version(tmp_path: Path) -> None:
    """A writer failing with ENOSPC mid-copy surfaces as StoreError and leaves no partial files."""
    writer = FullAfter(budget=1 << 20)
    store = Store(tmp_path / "root", write=writer)
    with store.lock():
        _publish_first(store, _artifact(tmp_path / "v1", 300_000))
        with pytest.raises(StoreError, match="ENOSPC") as info:
            store.stage(_artifact(tmp_path / "v2", 2 << 20))
        assert isinstance(info.value.__cause__, OSError)
        assert info.value.__cause__.errno == errno.ENOSPC
        assert writer.failures == 1
        _assert_published_intact(store)


def test_injected_full_disk_while_writing_the_pointer(tmp_path: Path) -> None:
    """If pointer.json cannot be written, install fails and the staged artifact is discarded."""
    writer = FullAfter(budget=1 << 30)
    store = Store(tmp_path / "root", write=writer)
    with store.lock():
        _publish_first(store, _artifact(tmp_path / "v1", 1000))
        staged = store.stage(_artifact(tmp_path / "v2", 1000))
        digest, size = tree_digest(staged)
        writer.budget = 0
        with pytest.raises(StoreError, match="ENOSPC"):
            store.install(staged, make_pointer("2", digest, size))
        assert len(store.versions("crashy")) == 1
        _assert_published_intact(store)


def test_injected_full_disk_on_a_pointer_rewrite_keeps_the_old_pointer(tmp_path: Path) -> None:
    """A failed provenance rewrite leaves the previous pointer.json byte for byte."""
    writer = FullAfter(budget=1 << 30)
    store = Store(tmp_path / "root", write=writer)
    with store.lock():
        _publish_first(store, _artifact(tmp_path / "v1", 1000))
        version_dir = store.current_dir()
        assert version_dir is not None
        before = (version_dir / "pointer.json").read_bytes()
        writer.budget = 10
        pointer = store.current()
        assert pointer is not None
        with pytest.raises(StoreError, match="ENOSPC"):
            store.update_pointer(version_dir, pointer.with_provenance("lkg-node", "registry down"))
        assert (version_dir / "pointer.json").read_bytes() == before
        _assert_published_intact(store)
