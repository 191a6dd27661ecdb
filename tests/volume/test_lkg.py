"""The node LKG: per-selector pointer entries, the content-addressed cache, locks and eviction."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from pointercache.base.clock import utcnow
from pointercache.errors import StoreLocked
from pointercache.model.candidate import Selector
from pointercache.model.digest import tree_digest
from pointercache.model.pointer import Pointer
from pointercache.volume.cas import NodeCache
from pointercache.volume.lkg import NodeLKG
from tests.helpers import make_pointer
from tests.stage.cache_worker import PAYLOAD

REPO = Path(__file__).resolve().parents[2]
PROD, CANARY = Selector("alias", "production"), Selector("alias", "candidate")


def _digest(n: int) -> str:
    return f"sha256:{n:064x}"


def _pointer(revision: int, digest: str, model: str = "recommender") -> Pointer:
    return make_pointer(
        model=model,
        version=str(revision),
        uri=f"file:///models/{revision}",
        digest=digest,
        revision=revision,
        source_detail="file:///m.json",
        registry_seen_at=utcnow(),
    )


def _artifact(root: Path, name: str, size: int) -> tuple[Path, str]:
    path = root / "src" / name
    path.mkdir(parents=True)
    (path / "weights.bin").write_bytes(name.encode() * (size // len(name)))
    return path, tree_digest(path)[0]


def test_write_takes_what_the_registry_confirmed(tmp_path: Path) -> None:
    """The node LKG always takes a registry-confirmed pointer, even below a stored revision."""
    lkg = NodeLKG(tmp_path)
    assert lkg.read("recommender", PROD) is None
    planted = _pointer(9 * 10**18, _digest(9))
    (tmp_path / "recommender.alias-production.json").write_bytes(planted.to_json())
    assert lkg.write(_pointer(5, _digest(1)), PROD)
    stored = lkg.read("recommender", PROD)
    assert stored is not None
    assert (stored.revision, stored.digest) == (5, _digest(1))
    assert lkg.write(_pointer(3, _digest(2)), PROD)
    stored = lkg.read("recommender", PROD)
    assert stored is not None
    assert (stored.revision, stored.digest) == (3, _digest(2))
    assert not any(p.name.startswith(".pc-tmp-") for p in tmp_path.iterdir())


def test_each_selector_has_its_own_entry(tmp_path: Path) -> None:
    """A canary's write never changes what production falls back to on the same node."""
    lkg = NodeLKG(tmp_path)
    assert lkg.write(_pointer(5, _digest(1)), PROD)
    assert lkg.write(_pointer(9, _digest(2)), CANARY)
    production, canary = lkg.read("recommender", PROD), lkg.read("recommender", CANARY)
    assert production is not None and canary is not None
    assert (production.version, canary.version) == ("5", "9")
    names = sorted(p.name for p in tmp_path.glob("*.json"))
    assert names == ["recommender.alias-candidate.json", "recommender.alias-production.json"]
    assert lkg.referenced_digests() == {_digest(1), _digest(2)}


@pytest.mark.parametrize(
    ("reader", "read_back"),
    [
        (PROD, "7"),  # the default selector reads the entry earlier releases wrote
        (CANARY, None),  # another selector never does: nothing says who wrote it
    ],
)
def test_pre_selector_entries(tmp_path: Path, reader: Selector, read_back: str | None) -> None:
    """<model>.json of earlier releases is read by alias:production only, until its own exists."""
    lkg = NodeLKG(tmp_path)
    (tmp_path / "recommender.json").write_bytes(_pointer(7, _digest(7)).to_json())
    found = lkg.read("recommender", reader)
    assert (found.version if found else None) == read_back
    lkg.write(_pointer(8, _digest(8)), reader)
    found = lkg.read("recommender", reader)
    assert found is not None
    assert found.version == "8"  # its own entry wins from now on


def test_names_a_registry_accepts_get_safe_entries(tmp_path: Path) -> None:
    """A model called 'Credit Risk' gets a derived file name, and reads back only its own."""
    lkg = NodeLKG(tmp_path)
    pointer = _pointer(2, _digest(2), model="Credit Risk")
    assert lkg.write(pointer, PROD)
    (entry,) = tmp_path.glob("*.json")
    assert " " not in entry.name
    assert entry.name.startswith("Credit-Risk--")
    assert entry.name.endswith(".alias-production.json")
    assert lkg.read("Credit Risk", PROD) == pointer
    assert lkg.read("Credit-Risk", PROD) is None


def test_damaged_pointer_is_replaced_by_the_next_write(tmp_path: Path) -> None:
    """A damaged LKG file raises on read and is overwritten by the next write."""
    lkg = NodeLKG(tmp_path)
    (tmp_path / "recommender.alias-production.json").write_bytes(b"{broken")
    with pytest.raises(Exception, match="not valid JSON"):
        lkg.read("recommender", PROD)
    assert lkg.write(_pointer(1, _digest(1)), PROD)
    assert lkg.referenced_digests() == {_digest(1)}


def test_cache_put_and_lookup(tmp_path: Path) -> None:
    """A put entry is found by digest, complete, with no temp directories left behind."""
    cache = NodeCache(tmp_path / "lkg")
    src, digest = _artifact(tmp_path, "a", 100)
    assert cache.lookup(digest) is None
    cached = cache.put(src, digest)
    assert cached == tmp_path / "lkg" / "cas" / "sha256" / digest.removeprefix("sha256:") / "model"
    assert cache.lookup(digest) == cached
    assert tree_digest(cached)[0] == digest
    assert cache.put(src, digest) == cached  # idempotent
    assert list((tmp_path / "lkg" / "cas" / ".tmp").iterdir()) == []


def test_verify_deletes_a_damaged_entry(tmp_path: Path) -> None:
    """Re-verifying an entry whose bytes changed deletes it."""
    cache = NodeCache(tmp_path / "lkg")
    src, digest = _artifact(tmp_path, "a", 100)
    cached = cache.put(src, digest)
    assert cache.verify(digest)
    (cached / "weights.bin").unlink()
    (cached / "weights.bin").write_bytes(b"tampered")
    assert not cache.verify(digest)
    assert cache.lookup(digest) is None
    assert not cached.parent.exists()


def test_lru_eviction_keeps_recent_and_lkg_referenced_digests(tmp_path: Path) -> None:
    """Over the bound, the least recently used unreferenced entries go; LKG digests stay."""
    lkg = NodeLKG(tmp_path / "lkg")
    cache = NodeCache(tmp_path / "lkg", max_bytes=250, protected=lkg.referenced_digests)
    a, da = _artifact(tmp_path, "a", 100)
    b, db = _artifact(tmp_path, "b", 100)
    c, dc = _artifact(tmp_path, "c", 100)
    d, dd = _artifact(tmp_path, "d", 100)
    lkg.write(_pointer(1, da), PROD)  # A is the node LKG: never evicted, although least recent
    cache.put(a, da)
    cache.put(b, db)
    assert cache.lookup(da) is not None
    cache.put(c, dc)  # 300 > 250: B is the LRU unreferenced entry
    assert {e[0] for e in cache.entries()} == {da, dc}
    assert cache.lookup(dc) is not None  # C used now: A is older but referenced
    cache.put(d, dd)  # 300 > 250: C is the only unreferenced entry older than D
    assert {e[0] for e in cache.entries()} == {da, dd}
    assert cache.lookup(db) is None


def test_eviction_skips_entries_locked_by_another_user(tmp_path: Path) -> None:
    """An entry whose digest lock is held (being copied) is not evicted."""
    cache = NodeCache(tmp_path / "lkg", max_bytes=150)
    a, da = _artifact(tmp_path, "a", 100)
    b, db = _artifact(tmp_path, "b", 100)
    cache.put(a, da)
    with NodeCache(tmp_path / "lkg").lock(da):
        cache.put(b, db)
        assert {e[0] for e in cache.entries()} == {da, db}
    assert cache.evict() == [da]


def test_cache_lock_times_out_while_held(tmp_path: Path) -> None:
    """A second holder of a digest lock waits, and gives up with StoreLocked after its timeout."""
    one, two = NodeCache(tmp_path), NodeCache(tmp_path)
    with (
        one.lock(_digest(1)),
        pytest.raises(StoreLocked),
        two.lock(_digest(1), timeout=0.2),
    ):
        pass
    with two.lock(_digest(1), timeout=0):
        pass


def test_pods_on_a_node_download_a_digest_once(tmp_path: Path) -> None:
    """Several processes staging the same digest fetch it once; the others reuse the cache."""
    payload = tmp_path / "payload"
    for rel, data in PAYLOAD.items():
        (payload / rel).parent.mkdir(parents=True, exist_ok=True)
        (payload / rel).write_bytes(data)
    digest = tree_digest(payload)[0]
    counter, go = tmp_path / "fetches.log", tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.stage.cache_worker",
                str(tmp_path / "lkg"),
                str(tmp_path / f"staging-{i}"),
                str(counter),
                str(go),
                digest,
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for i in range(3)
    ]
    go.touch()
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err.decode()
        results.append(orjson.loads(out))
    assert counter.read_text().splitlines() == ["memory://shared"]
    assert [r["digest"] for r in results] == [digest] * 3
    assert sorted(r["from_cache"] for r in results) == [False, True, True]
    for i in range(3):
        assert tree_digest(tmp_path / f"staging-{i}" / "model")[0] == digest
