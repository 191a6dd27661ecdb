"""The resolution chain: registry order and timeouts, then node LKG, cluster LKG and pinned."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from pointercache.errors import NotFound, SourceUnavailable
from pointercache.model.candidate import Candidate, Selector
from pointercache.model.pointer import Pointer
from pointercache.model.revision import Claim
from pointercache.resolve.chain import Attempt, Chain, Resolution
from pointercache.resolve.sources import SourceOptions
from pointercache.resolve.sources.memory import MemoryRegistry, MemorySource
from pointercache.volume.lkg import NodeLKG
from tests.helpers import make_pointer

PROD = Selector.parse("alias:production")
GUARD = 30.0  # an upper bound so a broken timeout fails the test instead of hanging it
D1, D2, D3 = ("sha256:" + c * 64 for c in "123")


def _manifest(version: str, revision: int = 1) -> dict[str, Any]:
    return {
        "schema": 1,
        "model": "recommender",
        "revision": revision,
        "aliases": {"production": version},
        "versions": {version: {"uri": f"memory://art/{version}"}},
    }


def _source(name: str, *, version: str | None = None, timeout: float = 0.5) -> MemorySource:
    registry = MemoryRegistry()
    if version is not None:
        registry.set_manifest("recommender", _manifest(version))
    return MemorySource(f"memory://{name}", SourceOptions(timeout=timeout), registry=registry)


def _pointer(version: str, digest: str, revision: int, model: str = "recommender") -> Pointer:
    return make_pointer(
        model=model,
        version=version,
        uri=f"memory://art/{version}",
        digest=digest,
        size_bytes=3,
        revision=revision,
        source_detail="memory://primary",
        registry_seen_at="2026-11-01T00:00:00.000Z",
    )


def _chain(sources: list[MemorySource], **kw: Any) -> Chain:
    kw.setdefault("lkg", None)
    kw.setdefault("cluster_lkg_dir", None)
    kw.setdefault("pinned", None)
    return Chain(sources=sources, **kw)


async def _all(chain: Chain) -> list[Resolution]:
    async with asyncio.timeout(GUARD):
        return [r async for r in chain.candidates("recommender", PROD)]


async def test_first_registry_answer_wins() -> None:
    """The first registry in order that answers is used; later ones are not asked."""
    primary, replica = _source("primary", version="8"), _source("replica", version="7")
    found, attempts = await _chain([primary, replica]).from_registries("recommender", PROD)
    assert found is not None
    assert (found.candidate.version, found.source, found.detail) == (
        "8",
        "registry",
        "memory://primary",
    )
    assert found.registry_seen_at is not None
    assert found.attempts == ()
    assert [(a.name, a.ok) for a in attempts] == [("memory://primary", True)]
    assert replica.registry.calls == 0


async def test_failed_registry_falls_through_to_the_next_with_its_reason() -> None:
    """A failing registry is recorded with its reason and the next one answers."""
    primary, replica = _source("primary", version="8"), _source("replica", version="7")
    primary.registry.fail(SourceUnavailable("503 from registry"))
    found, attempts = await _chain([primary, replica]).from_registries("recommender", PROD)
    assert found is not None
    assert found.candidate.version == "7"
    assert [(a.name, a.ok) for a in found.attempts] == [("memory://primary", False)]
    assert "SourceUnavailable: 503 from registry" in found.attempts[0].reason
    assert len(attempts) == 2


async def test_hanging_registry_is_bounded_by_its_timeout() -> None:
    """A registry that never answers is abandoned after its own timeout and the next one answers."""
    primary, replica = _source("primary", version="8", timeout=0.2), _source("replica", version="7")
    primary.registry.hang()
    async with asyncio.timeout(GUARD):
        found, _ = await _chain([primary, replica]).from_registries("recommender", PROD)
    assert found is not None
    assert found.candidate.version == "7"
    assert found.attempts[0].reason == "TimeoutError: no answer within 0.2s"


class StubbornSource:
    """A Source twin that ignores cancellation until told to stop (a badly behaved client)."""

    name = "memory://stubborn"

    def __init__(self) -> None:
        self.options = SourceOptions(timeout=0.1)
        self.release = asyncio.Event()

    async def resolve(self, model: str, selector: Selector) -> Candidate:
        while not self.release.is_set():
            try:
                await self.release.wait()
            except asyncio.CancelledError:
                continue
        raise SourceUnavailable("released")

    async def aclose(self) -> None:
        self.release.set()


async def test_source_that_ignores_cancellation_does_not_delay_resolution() -> None:
    """Even a source that swallows cancellation cannot hold the chain past its timeout."""
    stubborn = StubbornSource()
    replica = _source("replica", version="7")
    try:
        async with asyncio.timeout(GUARD):
            found, _ = await _chain([stubborn, replica]).from_registries(  # type: ignore[list-item]
                "recommender", PROD
            )
        assert found is not None
        assert found.candidate.version == "7"
    finally:
        await stubborn.aclose()
        await asyncio.sleep(0)


async def test_reasons_are_redacted() -> None:
    """Credentials and presigned query strings in a source's error never reach the attempts."""
    primary = _source("primary", version="8")
    primary.registry.fail(
        SourceUnavailable("GET https://bob:hunter2@reg.example/m?X-Amz-Signature=abcdef failed")
    )
    _found, attempts = await _chain([primary]).from_registries("recommender", PROD)
    assert "hunter2" not in attempts[0].reason
    assert "abcdef" not in attempts[0].reason
    assert "reg.example/m" in attempts[0].reason


async def test_falls_back_in_order_node_cluster_pinned(tmp_path: Path) -> None:
    """With registries down, the chain yields node LKG, cluster LKG, then pinned, with reasons."""
    primary = _source("primary", version="8")
    primary.registry.fail()
    lkg = NodeLKG(tmp_path / "lkg")
    lkg.write(_pointer("6", D1, revision=12), PROD)
    cluster = tmp_path / "cm"
    (cluster / "..2026_11_22").mkdir(parents=True)
    key = "recommender.alias-production.json"
    (cluster / "..2026_11_22" / key).write_bytes(_pointer("5", D2, 10).to_json())
    (cluster / "..data").symlink_to("..2026_11_22")
    (cluster / key).symlink_to(f"..data/{key}")
    pinned = Candidate(model="recommender", version="1", uri="memory://art/1", digest=D3)
    found = await _all(_chain([primary], lkg=lkg, cluster_lkg_dir=cluster, pinned=pinned))
    assert [(r.source, r.candidate.version) for r in found] == [
        ("lkg-node", "6"),
        ("lkg-cluster", "5"),
        ("pinned", "1"),
    ]
    node, clus, pin = found
    assert (node.candidate.digest, node.candidate.revision) == (D1, 12)
    assert node.registry_seen_at == "2026-11-01T00:00:00.000Z"
    assert [a.step for a in node.attempts] == ["registry"]
    assert "memory registry is down" in node.detail
    assert (clus.candidate.digest, clus.candidate.revision) == (D2, 10)
    assert node.claim is None  # a node-local file holds nothing against registries
    assert clus.claim == Claim("memory://primary", 10)  # what the cluster LKG recorded
    assert [(a.step, a.ok) for a in clus.attempts] == [("registry", False), ("lkg-node", False)]
    assert "answered, not staged" in clus.attempts[1].reason
    assert (pin.candidate.digest, pin.registry_seen_at) == (D3, None)
    assert [a.step for a in pin.attempts] == ["registry", "lkg-node", "lkg-cluster"]


async def test_a_legacy_lkg_entry_is_named_as_the_file_served(tmp_path: Path) -> None:
    """A pre-selector ``<model>.json`` served by the default selector is the file its pointer
    names (not the selector's own entry, which does not exist); a canary never reads it."""
    primary = _source("primary", version="8")
    primary.registry.fail()
    lkg = NodeLKG(tmp_path / "lkg")
    lkg.dir.mkdir()
    (lkg.dir / "recommender.json").write_bytes(_pointer("4", D1, 3).to_json())
    (node,) = await _all(_chain([primary], lkg=lkg))
    assert node.candidate.version == "4"
    assert node.detail.startswith(f"lkg-node {lkg.dir / 'recommender.json'} ")
    canary = await _chain([primary], lkg=lkg).fallback_answers(
        "recommender", Selector.parse("alias:candidate")
    )
    assert [(a.answer, a.name, a.reason) for a in canary] == [
        (None, str(lkg.dir / "recommender.alias-candidate.json"), "nothing stored")
    ]


async def test_registry_answer_comes_first_then_fallbacks(tmp_path: Path) -> None:
    """A registry answer is yielded first; asking for more yields the LKG (staging failed)."""
    lkg = NodeLKG(tmp_path / "lkg")
    lkg.write(_pointer("6", D1, revision=12), PROD)
    found = await _all(_chain([_source("primary", version="8")], lkg=lkg))
    assert [(r.source, r.candidate.version) for r in found] == [
        ("registry", "8"),
        ("lkg-node", "6"),
    ]
    assert found[1].attempts[0].reason == "version 8 answered, not staged"


async def test_a_refusal_is_recorded_against_its_own_attempt(tmp_path: Path) -> None:
    """Why the caller turned an answer down lands on that registry's attempt, not another's."""
    down, primary = _source("down"), _source("primary", version="8")
    down.registry.fail()
    lkg = NodeLKG(tmp_path / "lkg")
    lkg.write(_pointer("6", D1, revision=12), PROD)
    chain = _chain([down, primary], lkg=lkg)
    record: list[Attempt] = []
    seen = []
    async for resolution in chain.candidates("recommender", PROD, record):
        seen.append(resolution)
        if resolution.source == "registry":
            Chain.refuse(record, resolution, "version 8 refused: revision 3 is below 9")
    registry_reasons = [a.reason for a in record if a.step == "registry"]
    assert "memory registry is down" in registry_reasons[0]  # the other registry keeps its own
    assert registry_reasons[1] == "version 8 refused: revision 3 is below 9"
    assert "version 8 refused" in seen[1].detail  # the fallback's pointer says why
    assert record[-1].reason == "version 6 answered, not staged"


async def test_missing_and_damaged_fallbacks_are_recorded(tmp_path: Path) -> None:
    """Absent node LKG, damaged or foreign cluster LKG: each step says why; pinned answers."""
    cluster = tmp_path / "cm"
    cluster.mkdir()
    (cluster / "recommender.alias-production.json").write_bytes(b"{truncated")
    pinned = Candidate(model="recommender", version="1", uri="memory://art/1")
    registry = _source("primary")  # no manifest: NotFound
    found = await _all(
        _chain([registry], lkg=NodeLKG(tmp_path / "lkg"), cluster_lkg_dir=cluster, pinned=pinned)
    )
    assert [r.source for r in found] == ["pinned"]
    reasons = {a.step: a.reason for a in found[0].attempts}
    assert reasons["registry"].startswith("NotFound:")
    assert reasons["lkg-node"] == "nothing stored"
    assert "InvalidPointer" in reasons["lkg-cluster"]
    foreign = _pointer("5", D2, 10, model="fraud").to_json()
    (cluster / "recommender.alias-production.json").write_bytes(foreign)
    found = await _all(_chain([registry], cluster_lkg_dir=cluster))
    assert found == []


async def test_no_registry_and_no_fallback_yields_nothing() -> None:
    """Without registries and fallbacks the chain yields nothing (the caller fails loudly)."""
    found, attempts = await _chain([]).from_registries("recommender", PROD)
    assert found is None
    assert [a.reason for a in attempts] == ["no registry configured"]
    assert await _all(_chain([])) == []


async def test_memory_source_changes_and_not_found() -> None:
    """The memory twin yields on each new manifest and raises NotFound for unknown models."""
    source = _source("primary", version="8")
    with pytest.raises(NotFound):
        await source.resolve("fraud", PROD)
    changes = source.changes()
    waiter = asyncio.ensure_future(anext(changes))
    await asyncio.sleep(0)
    source.registry.set_manifest("recommender", _manifest("9", 2))
    await asyncio.wait_for(waiter, GUARD)
    assert (await source.resolve("recommender", PROD)).version == "9"
    await changes.aclose()


async def test_a_planted_node_lkg_is_a_step_with_a_reason(tmp_path: Path) -> None:
    """A FIFO where the node LKG should be is read at once as a reason; pinned answers."""
    lkg = NodeLKG(tmp_path / "lkg")
    lkg.dir.mkdir()
    os.mkfifo(lkg.pointer_path("recommender", PROD))
    pinned = Candidate(model="recommender", version="1", uri="memory://art/1")
    found = await _all(_chain([], lkg=lkg, pinned=pinned))
    assert [r.source for r in found] == ["pinned"]
    reasons = {a.step: a.reason for a in found[0].attempts}
    assert reasons["lkg-node"].startswith("UnsafeNodeFile:") and "a FIFO" in reasons["lkg-node"]


async def test_the_registries_together_keep_within_what_they_are_given() -> None:
    """With ``within``, a hanging first registry gets only that, and the next is not asked."""
    first = _source("primary", version="8", timeout=5.0)
    first.registry.hang()
    second = _source("replica", version="7", timeout=5.0)
    async with asyncio.timeout(GUARD):
        found, attempts = await _chain([first, second]).from_registries(
            "recommender", PROD, within=0.3
        )
    assert found is None
    assert [a.reason.split(":")[0] for a in attempts] == ["TimeoutError", "not asked"]
    assert second.registry.calls == 0
