"""The cluster LKG ConfigMap: optimistic concurrency, monotonic revisions, mounted reads."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

import pytest

from pointercache.adapters.kube.client import KubeClient, KubeConfig
from pointercache.cluster.lkg import ClusterLKG
from pointercache.errors import ConfigError, InvalidPointer, KubeConflict
from pointercache.model.pointer import Pointer
from pointercache.model.uris import configmap_target as parse_target
from pointercache.volume.lkg import read_mounted
from tests.helpers import make_pointer

DIGEST = "sha256:" + "cd" * 32


def pointer(revision: int, model: str = "recommender") -> Pointer:
    """A registry pointer whose version equals its revision."""
    return make_pointer(
        model=model,
        version=str(revision),
        uri=f"s3://models/{model}/{revision}/",
        digest=DIGEST,
        revision=revision,
        source_detail="configmap://ml/registry",
        resolved_at="2026-01-01T00:00:00.000Z",
        registry_seen_at="2026-01-01T00:00:00.000Z",
    )


def stored(cmapi, model: str = "recommender") -> Pointer:
    return Pointer.from_json(cmapi.objects[("ml", "lkg")]["data"][f"{model}.json"])


async def test_creates_on_404_then_replaces_with_resource_version(cmapi, make_client):
    """The first write creates the ConfigMap; later ones replace it at the read resourceVersion."""
    lkg = ClusterLKG("ml", "lkg", client=make_client(cmapi.url))
    first = await asyncio.to_thread(lkg.write, pointer(3))
    before = cmapi.objects[("ml", "lkg")]["metadata"]["resourceVersion"]
    second = await asyncio.to_thread(lkg.write, pointer(4))
    assert (first, second) == ("created", "written")
    assert stored(cmapi).revision == 4
    assert cmapi.count("create") == 1
    assert cmapi.count("replace") == 1
    obj = cmapi.objects[("ml", "lkg")]
    assert obj["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "pointercache"}
    assert obj["metadata"]["resourceVersion"] != before
    assert await asyncio.to_thread(lkg.read, "recommender") == pointer(4)


async def test_never_lowers_the_revision(cmapi, make_client):
    """A stored pointer with a higher revision is left alone; an equal one is not rewritten."""
    lkg = ClusterLKG("ml", "lkg", client=make_client(cmapi.url))
    await asyncio.to_thread(lkg.write, pointer(7))
    lower = await asyncio.to_thread(lkg.write, pointer(5))
    same = await asyncio.to_thread(lkg.write, pointer(7))
    assert (lower, same) == ("kept-newer", "unchanged")
    assert stored(cmapi).revision == 7
    assert cmapi.count("replace") == 0


async def test_keeps_other_models_keys(cmapi, make_client):
    """Writing one model's key keeps the keys of other models in the same ConfigMap."""
    cmapi.put("ml", "lkg", {"ranker.json": pointer(2, "ranker").to_json().decode()})
    lkg = ClusterLKG("ml", "lkg", client=make_client(cmapi.url))
    assert await asyncio.to_thread(lkg.write, pointer(9)) == "written"
    assert stored(cmapi, "ranker").revision == 2
    assert stored(cmapi).revision == 9


async def test_concurrent_writers_lose_no_update(cmapi, make_client):
    """Writers racing with injected conflicts: no lost update, no regression, final = max."""
    cmapi.inject_conflicts = 6
    writers, per_writer = 6, 5
    models = ("recommender", "ranker")

    def run(index: int) -> list[str]:
        client = make_client(cmapi.url)
        lkg = ClusterLKG("ml", "lkg", client=client, max_attempts=60)
        model = models[index % 2]
        return [lkg.write(pointer(index + writers * step, model)) for step in range(per_writer)]

    outcomes = await asyncio.gather(*(asyncio.to_thread(run, i) for i in range(writers)))
    top = {
        m: max(i + writers * (per_writer - 1) for i in range(writers) if models[i % 2] == m)
        for m in models
    }
    for model in models:
        assert stored(cmapi, model).revision == top[model]
        history = cmapi.stored_revisions[f"{model}.json"]
        assert history == sorted(history), f"{model} revision went down: {history}"
    assert cmapi.inject_conflicts == 0, "the injected conflicts were hit and survived"
    assert {o for run_outcomes in outcomes for o in run_outcomes} <= {
        "created",
        "written",
        "kept-newer",
        "unchanged",
    }
    assert cmapi.count("replace") > writers * per_writer // 2


async def test_gives_up_after_max_attempts(cmapi, make_client):
    """Endless conflicts end in KubeConflict instead of spinning forever."""
    cmapi.put("ml", "lkg", {})
    cmapi.inject_conflicts = 100
    lkg = ClusterLKG("ml", "lkg", client=make_client(cmapi.url), max_attempts=3)
    with pytest.raises(KubeConflict):
        await asyncio.to_thread(lkg.write, pointer(1))
    assert cmapi.count("replace") == 3


async def test_awrite_logs_and_never_raises():
    """With the API server unreachable, awrite returns None instead of raising."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = KubeClient(KubeConfig(host=f"http://127.0.0.1:{port}", request_timeout=2.0))
    try:
        assert await ClusterLKG("ml", "lkg", client=client).awrite(pointer(1)) is None
    finally:
        client.close()


def kubelet_volume(root: Path, files: dict[str, str]) -> Path:
    """Lay files out like the kubelet's AtomicWriter: ..data -> ..<ts>/, keys -> ..data/key."""
    stamp = root / "..2026_01_01_00_00_00.000000001"
    stamp.mkdir(parents=True)
    for key, text in files.items():
        (stamp / key).write_text(text)
        (root / key).symlink_to(f"..data/{key}")
    (root / "..data").symlink_to(stamp.name)
    return root


def test_read_mounted_through_kubelet_symlinks(tmp_path):
    """read_mounted reads <model>.json through the ..data symlink of a ConfigMap volume."""
    volume = kubelet_volume(
        tmp_path / "lkg",
        {"recommender.json": pointer(5).to_json().decode(), "broken.json": "{not json"},
    )
    assert read_mounted(volume, "recommender") == pointer(5)
    assert read_mounted(volume, "ranker") is None
    with pytest.raises(InvalidPointer, match="not valid JSON"):
        read_mounted(volume, "broken")
    assert read_mounted(tmp_path / "absent", "recommender") is None


def test_read_mounted_rejects_another_models_pointer(tmp_path):
    """A key whose pointer names another model is refused, naming the model it holds."""
    volume = kubelet_volume(
        tmp_path / "lkg", {"recommender.json": json.dumps(pointer(5, "ranker").to_dict())}
    )
    with pytest.raises(InvalidPointer, match="ranker"):
        read_mounted(volume, "recommender")


@pytest.mark.parametrize("text", ["ml", "ml/", "/lkg", "ML/lkg", "ml/lkg/x"])
def test_parse_target_rejects_malformed(text):
    """--lkg-configmap must be NAMESPACE/NAME."""
    with pytest.raises(ConfigError):
        parse_target(text)


def test_parse_target():
    """--lkg-configmap ml/lkg names namespace ml, ConfigMap lkg."""
    assert parse_target("ml/lkg") == ("ml", "lkg")
