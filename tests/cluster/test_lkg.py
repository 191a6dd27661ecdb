"""The cluster LKG ConfigMap: per-selector keys, optimistic concurrency, claims, mounted reads."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

import pytest

from pointercache.adapters.kube.client import KubeClient, KubeConfig
from pointercache.cluster.lkg import ClusterLKG
from pointercache.errors import ConfigError, InvalidPointer, KubeConflict
from pointercache.model.candidate import Selector
from pointercache.model.pointer import Pointer
from pointercache.model.uris import configmap_target as parse_target
from pointercache.volume.lkg import read_mounted
from tests.helpers import make_pointer

DIGEST = "sha256:" + "cd" * 32
PROD, CANARY = Selector("alias", "production"), Selector("alias", "candidate")


def pointer(
    revision: int, model: str = "recommender", registry: str = "configmap://ml/r"
) -> Pointer:
    """A registry pointer whose version equals its revision."""
    return make_pointer(
        model=model,
        version=str(revision),
        uri=f"s3://models/{model}/{revision}/",
        digest=DIGEST,
        revision=revision,
        source_detail=registry,
        resolved_at="2026-01-01T00:00:00.000Z",
        registry_seen_at="2026-01-01T00:00:00.000Z",
    )


def stored(cmapi, model: str = "recommender", selector: str = "alias-production") -> Pointer:
    return Pointer.from_json(cmapi.objects[("ml", "lkg")]["data"][f"{model}.{selector}.json"])


async def test_creates_on_404_then_replaces_with_resource_version(cmapi, make_client):
    """The first write creates the ConfigMap; later ones replace it at the read resourceVersion."""
    lkg = ClusterLKG("ml", "lkg", client=make_client(cmapi.url))
    first = await asyncio.to_thread(lkg.write, pointer(3), PROD)
    before = cmapi.objects[("ml", "lkg")]["metadata"]["resourceVersion"]
    second = await asyncio.to_thread(lkg.write, pointer(4), PROD)
    assert (first, second) == ("created", "written")
    assert stored(cmapi).revision == 4
    assert cmapi.count("create") == 1
    assert cmapi.count("replace") == 1
    obj = cmapi.objects[("ml", "lkg")]
    assert obj["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "pointercache"}
    assert obj["metadata"]["resourceVersion"] != before
    assert await asyncio.to_thread(lkg.read, "recommender", PROD) == pointer(4)


async def test_keeps_a_higher_claim_of_the_same_registry(cmapi, make_client):
    """A higher claim of the same registry stays, unless the writer accepted the lower one."""
    lkg = ClusterLKG("ml", "lkg", client=make_client(cmapi.url))
    await asyncio.to_thread(lkg.write, pointer(7), PROD)
    lower = await asyncio.to_thread(lkg.write, pointer(5), PROD)
    same = await asyncio.to_thread(lkg.write, pointer(7), PROD)
    assert (lower, same) == ("kept-newer", "unchanged")
    assert stored(cmapi).revision == 7
    assert cmapi.count("replace") == 0
    other = await asyncio.to_thread(lkg.write, pointer(2, registry="https://cdn/m.json"), PROD)
    assert other == "written"  # another registry's number says nothing about this one's
    assert stored(cmapi).revision == 2
    await asyncio.to_thread(lkg.write, pointer(9), PROD)
    reset = await asyncio.to_thread(lkg.write, pointer(3), PROD, accepted_lower=True)
    assert reset == "written"
    assert stored(cmapi).revision == 3


async def test_a_canary_never_overwrites_production(cmapi, make_client):
    """Each selector writes its own key: production's entry survives a canary's write."""
    lkg = ClusterLKG("ml", "lkg", client=make_client(cmapi.url))
    await asyncio.to_thread(lkg.write, pointer(7), PROD)
    assert await asyncio.to_thread(lkg.write, pointer(9), CANARY) == "written"
    assert stored(cmapi).version == "7"
    assert stored(cmapi, selector="alias-candidate").version == "9"
    assert await asyncio.to_thread(lkg.read, "recommender", PROD) == pointer(7)
    assert await asyncio.to_thread(lkg.read, "recommender", CANARY) == pointer(9)


async def test_keeps_other_models_keys(cmapi, make_client):
    """Writing one model's key keeps the keys of other models in the same ConfigMap."""
    cmapi.put(
        "ml", "lkg", {"ranker.alias-production.json": pointer(2, "ranker").to_json().decode()}
    )
    lkg = ClusterLKG("ml", "lkg", client=make_client(cmapi.url))
    assert await asyncio.to_thread(lkg.write, pointer(9), PROD) == "written"
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
        return [
            lkg.write(pointer(1 + index + writers * step, model), PROD)
            for step in range(per_writer)
        ]  # revisions from 1: a 0 is no claim, which overwrites any (model/revision.py)

    outcomes = await asyncio.gather(*(asyncio.to_thread(run, i) for i in range(writers)))
    top = {
        m: max(1 + i + writers * (per_writer - 1) for i in range(writers) if models[i % 2] == m)
        for m in models
    }
    for model in models:
        assert stored(cmapi, model).revision == top[model]
        history = cmapi.stored_revisions[f"{model}.alias-production.json"]
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
        await asyncio.to_thread(lkg.write, pointer(1), PROD)
    assert cmapi.count("replace") == 3


async def test_awrite_logs_and_never_raises():
    """With the API server unreachable, awrite returns None instead of raising."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = KubeClient(KubeConfig(host=f"http://127.0.0.1:{port}", request_timeout=2.0))
    try:
        assert await ClusterLKG("ml", "lkg", client=client).awrite(pointer(1), PROD) is None
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
    """read_mounted reads the selector's key through the ..data symlink of a ConfigMap volume."""
    volume = kubelet_volume(
        tmp_path / "lkg",
        {
            "recommender.alias-production.json": pointer(5).to_json().decode(),
            "recommender.alias-candidate.json": pointer(6).to_json().decode(),
            "broken.alias-production.json": "{not json",
        },
    )
    assert read_mounted(volume, "recommender", PROD) == pointer(5)
    assert read_mounted(volume, "recommender", CANARY) == pointer(6)
    assert read_mounted(volume, "ranker", PROD) is None
    with pytest.raises(InvalidPointer, match="not valid JSON"):
        read_mounted(volume, "broken", PROD)
    assert read_mounted(tmp_path / "absent", "recommender", PROD) is None


def test_read_mounted_pre_selector_key(tmp_path):
    """A <model>.json key of an earlier release is read for alias:production only."""
    volume = kubelet_volume(tmp_path / "lkg", {"recommender.json": pointer(4).to_json().decode()})
    assert read_mounted(volume, "recommender", PROD) == pointer(4)
    assert read_mounted(volume, "recommender", CANARY) is None


def test_read_mounted_rejects_another_models_pointer(tmp_path):
    """A key whose pointer names another model is refused, naming the model it holds."""
    volume = kubelet_volume(
        tmp_path / "lkg",
        {"recommender.alias-production.json": json.dumps(pointer(5, "ranker").to_dict())},
    )
    with pytest.raises(InvalidPointer, match="ranker"):
        read_mounted(volume, "recommender", PROD)


@pytest.mark.parametrize("text", ["ml", "ml/", "/lkg", "ML/lkg", "ml/lkg/x"])
def test_parse_target_rejects_malformed(text):
    """--lkg-configmap must be NAMESPACE/NAME."""
    with pytest.raises(ConfigError):
        parse_target(text)


def test_parse_target():
    """--lkg-configmap ml/lkg names namespace ml, ConfigMap lkg."""
    assert parse_target("ml/lkg") == ("ml", "lkg")
