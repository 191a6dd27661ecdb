"""Store behaviour: the on-disk contract, reinstall, garbage collection, recovery, validation."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from pointercache import reader
from pointercache.errors import InvalidPointer, StoreError
from pointercache.model.digest import tree_digest
from pointercache.model.revision import Claim
from pointercache.volume import layout
from pointercache.volume.fsutil import TMP_PREFIX
from pointercache.volume.store import Store
from tests.volume.artifacts import MODEL, install_version, make_pointer


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """A store under tmp_path with its lock held for the whole test."""
    s = Store(tmp_path / "root", keep_versions=2)
    s.ensure_layout()
    with s.lock():
        yield s


def test_publish_lays_out_the_documented_contract(store: Store) -> None:
    """After a publish, current, model and pointer.json are the relative links DESIGN.md names."""
    version_dir, pointer = install_version(store, "1")
    store.publish(version_dir)
    root = store.root
    assert (root / "current").readlink() == Path(f"versions/{MODEL}/{pointer.short}")
    assert (root / "model").readlink() == Path("current/model")
    assert (root / "pointer.json").readlink() == Path("current/pointer.json")
    assert tree_digest(root / "model") == (pointer.digest, pointer.size_bytes)
    assert (root / "pointer.json").read_bytes() == pointer.to_json()
    assert store.current() == pointer
    assert store.current_dir() == root / "versions" / MODEL / pointer.short
    assert list(store.staging_dir.iterdir()) == []


def test_publish_flips_to_the_new_version_and_keeps_the_old_one(store: Store) -> None:
    """A second publish moves current; the static links stay the same inode-free relative links."""
    first, _ = install_version(store, "1")
    store.publish(first)
    second, pointer2 = install_version(store, "2")
    store.publish(second)
    assert store.current() == pointer2
    assert first.is_dir()
    assert [p.name for p, _ in store.versions(MODEL)] == [second.name, first.name]
    loaded = reader.current(store.root)
    assert loaded is not None
    assert loaded.pointer == pointer2
    assert loaded.version_dir == second


def test_nothing_is_current_before_the_first_publish(store: Store) -> None:
    """An installed but unpublished version is not visible through current."""
    install_version(store, "1")
    assert store.current() is None
    assert store.current_dir() is None
    assert reader.current(store.root) is None


def test_reinstalling_the_same_version_rewrites_only_the_pointer(store: Store) -> None:
    """Installing a version again keeps its files (same inodes) and replaces its pointer.json."""
    version_dir, pointer = install_version(store, "3")
    store.publish(version_dir)
    inodes = {p: p.stat().st_ino for p in version_dir.rglob("*")}
    again, pointer2 = install_version(store, "3", source="lkg-node")
    assert again == version_dir
    assert pointer2.digest == pointer.digest
    assert {p: p.stat().st_ino for p in version_dir.rglob("*") if p.name != "pointer.json"} == {
        p: i for p, i in inodes.items() if p.name != "pointer.json"
    }
    assert store.current() == pointer2
    assert pointer2.source == "lkg-node"
    assert list(store.staging_dir.iterdir()) == []


def test_update_pointer_refuses_another_version_or_digest(store: Store) -> None:
    """A pointer rewrite must describe the same version and digest as the directory."""
    version_dir, pointer = install_version(store, "4")
    other = make_pointer("4", "sha256:" + "0" * 64, pointer.size_bytes)
    with pytest.raises(StoreError, match="holds"):
        store.update_pointer(version_dir, other)
    assert store.versions(MODEL)[0][1] == pointer


def test_install_refuses_an_artifact_outside_staging(store: Store, tmp_path: Path) -> None:
    """Only artifacts inside .staging (same filesystem, never referenced) can be installed."""
    outside = tmp_path / "elsewhere"
    outside.write_bytes(b"x")
    digest, size = tree_digest(outside)
    with pytest.raises(StoreError, match="not inside"):
        store.install(outside, make_pointer("1", digest, size))
    assert outside.exists()


def test_changes_require_the_lock(tmp_path: Path) -> None:
    """Every mutating call refuses to run unless this Store holds the writer lock."""
    s = Store(tmp_path / "root")
    s.ensure_layout()
    for call in (s.recover, s.new_staging_dir, s.gc):
        with pytest.raises(StoreError, match="lock"):
            call()


def test_gc_keeps_the_newest_n(store: Store) -> None:
    """With keep_versions=2, gc removes every older version of the model and reports them."""
    dirs = []
    for version in ["1", "2", "3", "4", "5"]:
        version_dir, _ = install_version(store, version)
        store.publish(version_dir)
        dirs.append(version_dir)
    removed = store.gc()
    assert sorted(removed) == sorted(dirs[:3])
    assert [p for p, _ in store.versions(MODEL)] == [dirs[4], dirs[3]]
    assert all(not d.exists() for d in dirs[:3])
    assert list(store.staging_dir.iterdir()) == []


def test_gc_never_removes_current_or_a_protected_digest(tmp_path: Path) -> None:
    """The current version (even if old) and LKG-named digests survive gc with keep_versions=1."""
    s = Store(tmp_path / "root", keep_versions=1)
    with s.lock():
        current, _ = install_version(s, "1")
        s.publish(current)
        protected, protected_ptr = install_version(s, "2")
        doomed, _ = install_version(s, "3")
        newest, _ = install_version(s, "4")
        assert s.gc(protect_digests={protected_ptr.digest}) == [doomed]
        assert current.is_dir()
        assert protected.is_dir()
        assert newest.is_dir()
        assert s.current_dir() == current


def test_gc_orders_by_last_install_or_publish(store: Store) -> None:
    """Re-publishing an old version makes it newest, so gc keeps it over a newer install."""
    one, _ = install_version(store, "1")
    two, _ = install_version(store, "2")
    three, _ = install_version(store, "3")
    store.publish(one)
    assert [p for p, _ in store.versions(MODEL)] == [one, three, two]
    assert store.gc() == [two]


def test_find_returns_the_version_with_that_digest(store: Store) -> None:
    """find() locates an installed version by model and full digest."""
    version_dir, pointer = install_version(store, "7")
    assert store.find(MODEL, pointer.digest) == version_dir
    assert store.find(MODEL, "sha256:" + "f" * 64) is None
    assert store.find("other-model", pointer.digest) is None


def test_recover_removes_leftovers_and_repairs_the_static_links(store: Store) -> None:
    """recover() deletes staging leftovers and temp links/files, and recreates missing links."""
    version_dir, pointer = install_version(store, "1")
    store.publish(version_dir)
    half = store.new_staging_dir()
    (half / "model").mkdir()
    (half / "model" / "part").write_bytes(b"half written")
    temp_link = store.root / f"{TMP_PREFIX}current-1234"
    temp_link.symlink_to("versions/nowhere")
    temp_pointer = version_dir / f"{TMP_PREFIX}pointer.json-abcd"
    temp_pointer.write_bytes(b"{")
    (store.root / "model").unlink()
    removed = store.recover()
    assert sorted(removed) == sorted([half, temp_link, temp_pointer])
    assert list(store.staging_dir.iterdir()) == []
    assert not os.path.lexists(temp_link)
    assert not temp_pointer.exists()
    assert (store.root / "model").readlink() == Path("current/model")
    assert store.current() == pointer
    assert store.recover() == []


def test_recover_replaces_a_staging_symlink_without_emptying_its_target(
    store: Store, tmp_path: Path
) -> None:
    """A .staging that is a symlink is replaced by a real directory; what it pointed at stays."""
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "keep.bin").write_bytes(b"not ours")
    shutil.rmtree(store.staging_dir)
    store.staging_dir.symlink_to(precious, target_is_directory=True)
    store.recover()
    assert (precious / "keep.bin").read_bytes() == b"not ours"
    assert store.staging_dir.is_dir() and not store.staging_dir.is_symlink()
    assert list(store.staging_dir.iterdir()) == []


def test_state_is_never_written_through_a_symlink(store: Store, tmp_path: Path) -> None:
    """A .state that is a symlink is replaced by a real directory; its target is not written."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (store.root / layout.STATE).symlink_to(elsewhere, target_is_directory=True)
    with store.lock():
        store.save_state(layout.LOADED, b"{}")
    assert list(elsewhere.iterdir()) == []
    state = store.root / layout.STATE
    assert state.is_dir() and not state.is_symlink()
    assert store.read_state(layout.LOADED, 16) == b"{}"


def test_recover_and_gc_do_not_follow_symlinked_version_dirs(store: Store, tmp_path: Path) -> None:
    """Symlinks planted under versions/ are neither emptied by recover nor deleted through."""
    version_dir, _pointer = install_version(store, "1")
    store.publish(version_dir)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / f"{TMP_PREFIX}looks-like-a-leftover").write_bytes(b"not ours")
    (store.versions_dir / MODEL / "9-planted").symlink_to(outside, target_is_directory=True)
    (store.versions_dir / "other-model").symlink_to(outside, target_is_directory=True)
    store.recover()
    store.gc()
    assert (outside / f"{TMP_PREFIX}looks-like-a-leftover").read_bytes() == b"not ours"
    assert [p for p, _ in store.versions()] == [version_dir]


def test_a_versions_symlink_is_refused(store: Store, tmp_path: Path) -> None:
    """versions/ must be a real directory: a symlink there is a StoreError, never followed."""
    shutil.rmtree(store.versions_dir)
    (tmp_path / "elsewhere").mkdir()
    store.versions_dir.symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with pytest.raises(StoreError, match="not a directory"):
        store.recover()


def test_a_damaged_pointer_is_a_one_line_error_naming_the_field(store: Store) -> None:
    """A wrong-typed field in the published pointer.json gives InvalidPointer naming that field."""
    version_dir, pointer = install_version(store, "1")
    store.publish(version_dir)
    text = (version_dir / "pointer.json").read_text()
    (version_dir / "pointer.json").write_text(
        text.replace(f'"size_bytes": {pointer.size_bytes}', '"size_bytes": "big"')
    )
    for read in (store.current, lambda: reader.current(store.root)):
        with pytest.raises(InvalidPointer) as info:
            read()
        assert "size_bytes" in str(info.value)
        assert "\n" not in str(info.value)


def test_a_truncated_pointer_is_an_invalid_pointer(store: Store) -> None:
    """A pointer.json that is not JSON at all is reported as InvalidPointer, not a crash."""
    version_dir, _ = install_version(store, "1")
    store.publish(version_dir)
    (version_dir / "pointer.json").write_bytes(b'{"model": "cr')
    with pytest.raises(InvalidPointer, match="not valid JSON"):
        store.current()


def test_publish_refuses_a_directory_outside_versions(store: Store, tmp_path: Path) -> None:
    """Only installed version directories can become current."""
    _, pointer = install_version(store, "1")
    fake = tmp_path / "fake" / pointer.short
    fake.mkdir(parents=True)
    (fake / "pointer.json").write_bytes(pointer.to_json())
    (fake / "model").write_bytes(b"x")
    with pytest.raises(StoreError, match="not an installed version"):
        store.publish(fake)
    assert store.current() is None


def test_a_dangling_current_is_reported_not_hidden(store: Store) -> None:
    """If someone deletes the current version by hand, current_dir() raises StoreError."""
    version_dir, _ = install_version(store, "1")
    store.publish(version_dir)
    version_dir.rename(store.root / "gone")
    with pytest.raises(StoreError, match="missing"):
        store.current_dir()


def test_install_from_reuses_an_installed_artifact(store: Store) -> None:
    """Same bytes under a new version name are hard-linked, not refetched; same name rewrites."""
    version_dir, pointer = install_version(store, "8")
    renamed = make_pointer("9", pointer.digest, pointer.size_bytes, source="lkg-node")
    new_dir = store.install_from(version_dir, renamed)
    assert new_dir.name == renamed.short != version_dir.name
    assert tree_digest(new_dir / "model") == (pointer.digest, pointer.size_bytes)
    old_files = sorted(p for p in (version_dir / "model").rglob("*") if p.is_file())
    assert old_files  # version 8's artifact is a directory of several files
    new_files = sorted(p for p in (new_dir / "model").rglob("*") if p.is_file())
    assert [p.stat().st_ino for p in old_files] == [p.stat().st_ino for p in new_files]
    confirmed = make_pointer("8", pointer.digest, pointer.size_bytes, source="lkg-cluster")
    assert store.install_from(version_dir, confirmed) == version_dir
    assert store.versions(MODEL)[0] == (version_dir, confirmed)
    assert list(store.staging_dir.iterdir()) == []


def test_published_files_are_readable_by_all_under_a_077_umask(tmp_path: Path) -> None:
    """Files come out 0644 and directories 0755 on the volume, whatever the umask and fetcher."""
    old = os.umask(0o077)
    try:
        store = Store(tmp_path / "root")
        with store.lock():
            staging = store.new_staging_dir()
            artifact = staging / "model"
            (artifact / "sub").mkdir(parents=True)
            for rel in ("weights.bin", "sub/config.json"):
                fd = os.open(artifact / rel, os.O_WRONLY | os.O_CREAT, 0o600)  # as a fetcher
                os.write(fd, rel.encode())
                os.close(fd)
            digest, size = tree_digest(artifact)
            version_dir = store.install(artifact, make_pointer("1", digest, size))
            store.publish(version_dir)
    finally:
        os.umask(old)
    root = tmp_path / "root"
    modes = {
        str(path.relative_to(root)): oct(path.stat().st_mode & 0o777)
        for path in [root / "versions", *(root / "versions").rglob("*")]
    }
    assert modes == {
        "versions": "0o755",
        f"versions/{MODEL}": "0o755",
        f"versions/{MODEL}/{version_dir.name}": "0o755",
        f"versions/{MODEL}/{version_dir.name}/pointer.json": "0o644",
        f"versions/{MODEL}/{version_dir.name}/model": "0o755",
        f"versions/{MODEL}/{version_dir.name}/model/sub": "0o755",
        f"versions/{MODEL}/{version_dir.name}/model/sub/config.json": "0o644",
        f"versions/{MODEL}/{version_dir.name}/model/weights.bin": "0o644",
    }


def test_a_model_name_with_spaces_gets_a_derived_directory(store: Store) -> None:
    """'Credit Risk' is installed under a derived, separator-free directory and found again."""
    version_dir, pointer = install_version(store, "3", model="Credit Risk")
    store.publish(version_dir)
    assert version_dir.parent.name.startswith("Credit-Risk--")
    assert " " not in str((store.root / "current").readlink())
    assert store.current() == pointer
    assert store.find("Credit Risk", pointer.digest) == version_dir
    assert store.versions("Credit-Risk") == []


def test_the_claim_behind_a_version_is_recorded_beside_it(store: Store) -> None:
    """write_claim/read_claim keep (registry, revision); a damaged claim reads as none."""
    version_dir, _ = install_version(store, "1")
    assert store.read_claim(version_dir) is None
    store.write_claim(version_dir, Claim("https://cdn/m.json", 17))
    assert store.read_claim(version_dir) == Claim("https://cdn/m.json", 17)
    (version_dir / "claim.json").write_text('{"registry": "x", "revision": 1e999}')
    assert store.read_claim(version_dir) is None
    store.write_claim(version_dir, None)
    assert not (version_dir / "claim.json").exists()
