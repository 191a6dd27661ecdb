"""The init container as a real process: exit codes, provenance, the termination log."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

from pointercache.model.digest import tree_digest
from pointercache.model.pointer import Pointer
from tests.e2e.conftest import World
from tests.e2e.helpers import run_init, write_manifest


def served(root: Path) -> Pointer:
    """The published pointer, after checking the model files match its digest."""
    pointer = Pointer.read(root / "pointer.json")
    assert tree_digest(root / "model")[0] == pointer.digest
    return pointer


def test_init_publishes_from_the_registry(world: World, cli_env: dict[str, str]) -> None:
    """With a live registry, init publishes the aliased version with source 'registry'."""
    proc = run_init(cli_env, *world.init_args())
    assert proc.returncode == 0, proc.stderr
    pointer = served(world.root)
    assert (pointer.version, pointer.source, pointer.revision) == ("1", "registry", 1)
    assert pointer.registry_seen_at is not None
    assert os.readlink(world.root / "model") == "current/model"
    assert (world.lkg / "recommender.alias-production.json").is_file()


def test_init_falls_back_to_the_node_lkg(world: World, cli_env: dict[str, str]) -> None:
    """Without the registry, a second pod on the node becomes ready from the node LKG."""
    assert run_init(cli_env, *world.init_args()).returncode == 0
    world.manifest.unlink()
    pod2 = world.base / "pod2"
    proc = run_init(cli_env, *world.init_args(root=pod2))
    assert proc.returncode == 0, proc.stderr
    pointer = served(pod2)
    assert (pointer.version, pointer.source) == ("1", "lkg-node")
    assert "recommender.json" in pointer.source_detail or "registry" in pointer.source_detail


def test_init_uses_the_node_cache_when_the_origin_is_gone(
    world: World, cli_env: dict[str, str]
) -> None:
    """The LKG's artifact comes from the node cache even when its origin URI has vanished."""
    assert run_init(cli_env, *world.init_args()).returncode == 0
    world.manifest.unlink()
    shutil.rmtree(world.base / "artifacts")
    proc = run_init(cli_env, *world.init_args(root=world.base / "pod2"))
    assert proc.returncode == 0, proc.stderr
    assert served(world.base / "pod2").source == "lkg-node"


def test_init_falls_back_to_pinned(world: World, cli_env: dict[str, str]) -> None:
    """With neither registry nor LKG, init publishes the pinned version."""
    world.manifest.unlink()
    art = world.base / "artifacts" / "v2"
    digest, _ = tree_digest(art)
    proc = run_init(
        cli_env,
        *world.init_args(
            "--pinned-version", "2", "--pinned-uri", art.as_uri(), "--pinned-digest", digest
        ),
    )
    assert proc.returncode == 0, proc.stderr
    pointer = served(world.root)
    assert (pointer.version, pointer.source) == ("2", "pinned")


def test_init_fails_loudly_with_nothing_to_serve(world: World, cli_env: dict[str, str]) -> None:
    """With no registry, LKG or pinned version, init exits 1 with one line and writes no pointer."""
    world.manifest.unlink()
    proc = run_init(cli_env, *world.init_args())
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("pointercache init: no servable model for 'recommender'")
    reason = world.term.read_text()
    assert reason.count("\n") == 1 and "no servable model" in reason
    assert not (world.root / "pointer.json").exists()
    assert not (world.root / "current").exists()


def test_init_rejects_a_digest_mismatch_and_keeps_the_current_version(
    world: World, cli_env: dict[str, str]
) -> None:
    """A manifest promising the wrong digest is refused; the published version stays."""
    assert run_init(cli_env, *world.init_args()).returncode == 0
    doc = json.loads(world.manifest.read_text())
    doc["aliases"]["production"] = "2"
    doc["revision"] = 2
    doc["versions"]["2"]["digest"] = "sha256:" + "0" * 64
    world.manifest.write_text(json.dumps(doc))
    proc = run_init(cli_env, *world.init_args())
    assert proc.returncode == 0, proc.stderr
    pointer = served(world.root)
    assert (pointer.version, pointer.source) == ("1", "lkg-node")
    assert not list((world.root / ".staging").iterdir())


def test_init_reports_a_damaged_manifest(world: World, cli_env: dict[str, str]) -> None:
    """A truncated manifest is a registry failure named in the one-line reason."""
    world.manifest.write_text('{"schema": 1, "model": "recommender", "revis')
    proc = run_init(cli_env, *world.init_args())
    assert proc.returncode == 1
    assert "JSON" in world.term.read_text() or "manifest" in world.term.read_text()


def test_init_exits_2_on_bad_configuration(world: World, cli_env: dict[str, str]) -> None:
    """Missing --model, a bad selector, an unknown scheme or a misspelled env var exit 2."""
    base = ["--root", str(world.root), "--termination-log", str(world.term)]
    assert run_init(cli_env, *base).returncode == 2
    bad_selector = run_init(cli_env, *world.init_args("--selector", "latest"))
    assert bad_selector.returncode == 2 and "selector" in bad_selector.stderr
    bad_scheme = run_init(cli_env, "--model", "m", "--registry", "gopher://x", *base)
    assert bad_scheme.returncode == 2 and "gopher" in bad_scheme.stderr
    env = cli_env | {"POINTERCACHE_REGISTRY_TIMEOUTT": "1"}
    typo = run_init(env, *world.init_args())
    assert typo.returncode == 2 and "POINTERCACHE_REGISTRY_TIMEOUTT" in typo.stderr
    assert run_init(cli_env, *world.init_args("--registry-timeou", "1")).returncode == 2


def test_init_reads_settings_from_the_environment(world: World, cli_env: dict[str, str]) -> None:
    """Every flag has a POINTERCACHE_* equivalent; flags win over the environment."""
    env = cli_env | {
        "POINTERCACHE_MODEL": "recommender",
        "POINTERCACHE_REGISTRY": world.manifest.as_uri(),
        "POINTERCACHE_ROOT": str(world.base / "wrong"),
        "POINTERCACHE_TERMINATION_LOG": str(world.term),
        "POINTERCACHE_SELECTOR": "version:2",
    }
    proc = run_init(env, "--root", str(world.root))
    assert proc.returncode == 0, proc.stderr
    assert served(world.root).version == "2"
    assert not (world.base / "wrong").exists()


def test_init_skips_an_unwritable_termination_log(world: World, cli_env: dict[str, str]) -> None:
    """A termination-log path that cannot be written is skipped silently."""
    world.manifest.unlink()
    proc = run_init(
        cli_env,
        *world.init_args(),
        "--termination-log",
        str(world.base / "no" / "such" / "dir" / "log"),
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr


ENTRY = "recommender.alias-production.json"


def test_init_refuses_a_registry_answer_below_the_cluster_lkg(
    world: World, cli_env: dict[str, str]
) -> None:
    """A lagging registry (below what it claimed in the cluster LKG) does not pull a pod back."""
    world.publish(7, "2")
    assert run_init(cli_env, *world.init_args()).returncode == 0
    cluster = world.base / "cluster-lkg"
    cluster.mkdir()
    shutil.copy(world.lkg / ENTRY, cluster / ENTRY)  # what the fleet's sidecars recorded
    world.publish(3, "1")
    pod2 = world.base / "pod2"
    proc = run_init(cli_env, *world.init_args("--lkg-cluster-dir", str(cluster), root=pod2))
    assert proc.returncode == 0, proc.stderr
    pointer = served(pod2)
    assert (pointer.version, pointer.source) == ("2", "lkg-node")
    assert "version 1 refused" in pointer.source_detail
    assert "below the revision 7 it claimed before (cluster LKG)" in pointer.source_detail
    claim = json.loads((pod2 / "current" / "claim.json").read_bytes())
    assert claim == {"registry": world.manifest.as_uri(), "revision": 7}  # the sidecar holds it
    assert '"level":"warning","event":"stale-answer"' in proc.stderr


def test_a_node_lkg_never_refuses_a_registry_answer(world: World, cli_env: dict[str, str]) -> None:
    """A node LKG entry at revision 9e18 (planted, or bogus) does not keep an answer out."""
    world.publish(7, "2")
    assert run_init(cli_env, *world.init_args()).returncode == 0
    planted = replace(Pointer.read(world.lkg / ENTRY), revision=9 * 10**18)
    (world.lkg / ENTRY).write_bytes(planted.to_json())
    world.publish(3, "1")
    pod2 = world.base / "pod2"
    proc = run_init(cli_env, *world.init_args(root=pod2))
    assert proc.returncode == 0, proc.stderr
    assert (served(pod2).version, served(pod2).source, served(pod2).revision) == (
        "1",
        "registry",
        3,
    )
    assert Pointer.read(world.lkg / ENTRY).revision == 3  # and the node LKG is repaired


SIG_CODE = {
    "inputs": [{"name": "amount", "type": "double"}, {"name": "merchant", "type": "string"}]
}
SIG_OK = {
    "inputs": [
        {"name": "amount", "type": "double", "required": True},
        {"name": "merchant", "type": "string", "required": True},
    ]
}
SIG_GEO = {"inputs": [*SIG_OK["inputs"], {"name": "geo_lat", "type": "double", "required": True}]}


def test_init_falls_back_past_an_incompatible_signature(
    world: World, cli_env: dict[str, str], tmp_path: Path
) -> None:
    """The registry's model needs a feature the code lacks: init serves the compatible LKG."""
    expect = tmp_path / "expect.json"
    expect.write_text(json.dumps(SIG_CODE))
    args = ["--expect-signature", str(expect)]
    world.publish(1, "1", signatures={"1": SIG_OK, "2": SIG_GEO})
    assert run_init(cli_env, *world.init_args(*args)).returncode == 0
    world.publish(2, "2", signatures={"1": SIG_OK, "2": SIG_GEO})
    pod2 = world.base / "pod2"
    proc = run_init(cli_env, *world.init_args(*args, root=pod2))
    assert proc.returncode == 0, proc.stderr
    assert (served(pod2).version, served(pod2).source) == ("1", "lkg-node")
    fresh = run_init(
        cli_env, *world.init_args(*args, root=world.base / "pod3", lkg=world.base / "empty-lkg")
    )
    assert fresh.returncode == 1
    assert "geo_lat" in world.term.read_text()
    assert not (world.base / "pod3" / "pointer.json").exists()


def test_an_unsigned_model_is_reported_once(
    world: World, cli_env: dict[str, str], tmp_path: Path
) -> None:
    """With the gate on, a model without a signature is let through with one warning, not two."""
    expect = tmp_path / "expect.json"
    expect.write_text(json.dumps(SIG_CODE))
    proc = run_init(cli_env, *world.init_args("--expect-signature", str(expect)))
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    unchecked = [line for line in lines if line["event"] == "signature-unchecked"]
    assert len(unchecked) == 1
    assert unchecked[0]["level"] == "warning" and unchecked[0]["version"] == "1"


def test_a_canary_never_becomes_production_s_last_known_good(
    world: World, cli_env: dict[str, str]
) -> None:
    """A canary pod on the same node writes its own LKG; production starting in an outage
    falls back to what production served, not to the canary's version."""
    write_manifest(
        world.manifest, world.base, revision=3, aliases={"production": "1", "candidate": "2"}
    )
    assert run_init(cli_env, *world.init_args()).returncode == 0
    canary = world.base / "canary"
    proc = run_init(cli_env, *world.init_args("--selector", "alias:candidate", root=canary))
    assert proc.returncode == 0, proc.stderr
    assert served(canary).version == "2"  # the canary ran last on this node
    world.manifest.unlink()  # the registry goes away
    pod2 = world.base / "pod2"
    proc = run_init(cli_env, *world.init_args(root=pod2))
    assert proc.returncode == 0, proc.stderr
    assert (served(pod2).version, served(pod2).source) == ("1", "lkg-node")
    names = sorted(p.name for p in world.lkg.glob("*.json"))
    assert names == ["recommender.alias-candidate.json", "recommender.alias-production.json"]
