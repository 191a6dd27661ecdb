"""The node directory (``--lkg-dir``) is untrusted: its cache is copied and verified, never linked.

Every pointercache pod on a node (and anything else with the hostPath) can write the node
directory. These run the real ``pointercache init`` with the shared volume and the node directory
on one filesystem (both under tmp_path), where a hard link between them would be possible.
"""

from __future__ import annotations

from pathlib import Path

from pointercache.model.candidate import Selector
from pointercache.model.digest import tree_digest
from pointercache.model.pointer import Pointer
from pointercache.volume.lkg import NodeLKG
from tests.e2e.conftest import World
from tests.e2e.helpers import MODEL, run_init


def files(root: Path) -> list[Path]:
    """Every regular file under ``root``."""
    return [p for p in root.rglob("*") if p.is_file() and not p.is_symlink()]


def inodes(root: Path) -> set[tuple[int, int]]:
    """(device, inode) of every regular file under ``root``."""
    return {(p.stat().st_dev, p.stat().st_ino) for p in files(root)}


def cache_entry(world: World, digest: str) -> Path:
    """The node cache's copy of ``digest``."""
    return world.lkg / "cas" / "sha256" / digest.removeprefix("sha256:") / "model"


def rewrite_in_place(path: Path, data: bytes) -> None:
    """Overwrite ``path``'s bytes keeping its inode (what a writer of the node directory can do)."""
    with path.open("r+b") as out:
        out.truncate(0)
        out.write(data)


def test_served_tree_shares_no_inode_with_the_node_cache(
    world: World, cli_env: dict[str, str]
) -> None:
    """After a fetch and after a cache hit, a write to the cache entry cannot reach the model."""
    assert run_init(cli_env, *world.init_args()).returncode == 0
    pod2 = world.base / "pod2"
    proc = run_init(cli_env, *world.init_args(root=pod2))  # served from the node cache
    assert proc.returncode == 0, proc.stderr
    assert '"cache-hit"' in proc.stderr
    pointer = Pointer.read(world.root / "pointer.json")
    entry = cache_entry(world, pointer.digest)
    assert (world.root / "model").stat().st_dev == entry.stat().st_dev  # one filesystem
    for pod in (world.root, pod2):
        served = (pod / "current").resolve() / "model"
        assert not inodes(served) & inodes(entry)
    before = {pod: tree_digest((pod / "current").resolve() / "model") for pod in (world.root, pod2)}
    for path in files(entry):
        rewrite_in_place(path, b"planted after verification")
    for pod in (world.root, pod2):
        assert tree_digest((pod / "current").resolve() / "model") == before[pod]
        assert tree_digest((pod / "current").resolve() / "model")[0] == pointer.digest


def test_planted_cache_entry_for_an_lkg_pointer_is_not_served(
    world: World, cli_env: dict[str, str]
) -> None:
    """An LKG pointer naming a digest whose cache entry holds other bytes is not served: the
    entry is discarded and the chain moves on (here to the pinned version)."""
    assert run_init(cli_env, *world.init_args()).returncode == 0
    pointer = Pointer.read(world.root / "pointer.json")
    entry = cache_entry(world, pointer.digest)
    for path in files(entry):
        rewrite_in_place(path, b"evil model")
    world.manifest.unlink()  # the registry is down
    art = world.base / "artifacts" / "v2"
    digest, _ = tree_digest(art)
    pod2 = world.base / "pod2"
    pinned = ("--pinned-version", "2", "--pinned-uri", art.as_uri(), "--pinned-digest", digest)
    # the LKG's own origin is a file:// URI named by the node directory (remote): refused too
    proc = run_init(cli_env, *world.init_args(*pinned, root=pod2))
    assert proc.returncode == 0, proc.stderr
    served = Pointer.read(pod2 / "pointer.json")
    assert (served.version, served.source) == ("2", "pinned")
    assert b"evil model" not in b"".join(p.read_bytes() for p in files(pod2 / "versions"))
    assert '"cache-damaged"' in proc.stderr
    assert not entry.exists()  # the damaged entry was discarded


def test_cache_entry_that_is_a_symlink_is_not_followed(
    world: World, cli_env: dict[str, str], tmp_path: Path
) -> None:
    """A cache entry replaced by a symlink to another directory is refused, not read through."""
    assert run_init(cli_env, *world.init_args()).returncode == 0
    pointer = Pointer.read(world.root / "pointer.json")
    entry = cache_entry(world, pointer.digest)
    elsewhere = tmp_path / "elsewhere"
    entry.rename(elsewhere)  # identical bytes: only the link itself is wrong
    entry.symlink_to(elsewhere, target_is_directory=True)
    world.manifest.unlink()
    pod2 = world.base / "pod2"
    proc = run_init(cli_env, *world.init_args(root=pod2))
    assert '"cache-damaged"' in proc.stderr
    assert proc.returncode == 1  # the LKG's file:// origin is not allowed either: nothing left
    assert elsewhere.is_dir()  # what the link pointed at was not touched


def test_lkg_with_a_remote_file_origin_is_refused(world: World, cli_env: dict[str, str]) -> None:
    """A planted LKG pointer naming a pod file (file:///proc/self/environ) is never fetched."""
    NodeLKG(world.lkg).write(
        Pointer(
            model=MODEL,
            version="9",
            uri="file:///proc/self/environ",
            digest="sha256:" + "0" * 64,
            size_bytes=10,
            revision=99,
            signature=None,
            source="registry",
            source_detail="planted",
            resolved_at="2026-01-01T00:00:00Z",
            registry_seen_at=None,
        ),
        Selector.parse("alias:production"),  # what init asks for by default
    )
    world.manifest.unlink()
    proc = run_init(cli_env, *world.init_args())
    assert proc.returncode == 1
    assert "remote registry or an LKG" in world.term.read_text()
    assert not (world.root / "pointer.json").exists()
