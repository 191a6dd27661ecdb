"""The outbox keeps what was queued; the drainer applies it once, in order, with backoff."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from pointercache.errors import OutboxError, SourceUnavailable
from pointercache.publish.drain import Drainer, backoff, publish
from pointercache.publish.outbox import Outbox, State
from pointercache.publish.registrars import MemoryRegistry
from pointercache.publish.registration import Registration
from pointercache.resolve.sources import SourceOptions
from tests.publish.conftest import twin

FAST = backoff(initial=0.01, maximum=0.05)


def reg(version: str, model: str = "m", alias: str | None = None) -> Registration:
    """A registration of ``model`` ``version``."""
    return Registration.build(model=model, version=version, uri=f"s3://b/{version}/", alias=alias)


def versions(registry: MemoryRegistry) -> list[tuple[str, str]]:
    """(model, version) in the order the registry applied them."""
    return list(registry.applied)


def test_an_entry_is_on_disk_once_enqueue_returns(tmp_path: Path) -> None:
    """A second connection (another process's view) sees the entry; the same one is not doubled."""
    with Outbox(tmp_path / "ob") as outbox:
        entry, new = outbox.enqueue("memory://x", reg("1"))
        again, new_again = outbox.enqueue("memory://x", reg("1"))
        other, _ = outbox.enqueue("memory://y", reg("1"))
    assert (new, new_again, again.seq) == (True, False, entry.seq)
    assert other.seq != entry.seq
    db = sqlite3.connect(tmp_path / "ob" / "outbox.sqlite3")
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        rows = db.execute("SELECT seq, state FROM entries ORDER BY seq").fetchall()
    finally:
        db.close()
    assert rows == [(1, "queued"), (2, "queued")]


def test_a_full_outbox_fails_clearly_and_keeps_earlier_entries(tmp_path: Path) -> None:
    """Past SQLite's page limit enqueue raises OutboxError(SQLITE_FULL); older entries stay."""
    with Outbox(tmp_path / "ob") as outbox:
        outbox.enqueue("memory://x", reg("1"))
    db = sqlite3.connect(tmp_path / "ob" / "outbox.sqlite3")
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    db.close()
    with Outbox(tmp_path / "ob", max_pages=pages) as outbox:
        tags = {f"t{n}": "x" * 4000 for n in range(4)}  # 16 KB: more pages than are left
        big = Registration.build(model="m", version="2", uri="s3://b/2/", tags=tags)
        with pytest.raises(OutboxError, match="SQLITE_FULL"):
            outbox.enqueue("memory://x", big)
        assert [e.registration.version for e in outbox.entries()] == ["1"]
        assert outbox.integrity() == "ok"


async def test_entries_of_one_model_apply_in_publish_order(
    tmp_path: Path, memory_registry: tuple[str, MemoryRegistry]
) -> None:
    """A failing first entry holds back the rest of its model; another model goes on."""
    uri, registry = memory_registry
    with Outbox(tmp_path / "ob") as outbox:
        for version in ("1", "2", "3"):
            outbox.enqueue(uri, reg(version, alias="production"))
        outbox.enqueue(uri, reg("7", model="other"))
        drainer = Drainer(outbox, opener=twin(registry))
        registry.fail(times=1)
        first = await drainer.drain_once()
        assert (first.registered, first.pending, list(first.failed)) == ([4], 3, [1])
        assert versions(registry) == [("other", "7")]
        second = await drainer.drain_once()
        assert (second.registered, second.pending) == ([1, 2, 3], 0)
    assert versions(registry) == [("other", "7"), ("m", "1"), ("m", "2"), ("m", "3")]
    entries = {e.seq: e for e in Outbox(tmp_path / "ob").entries()}
    assert entries[1].attempts == 2
    assert entries[1].state is State.REGISTERED
    assert "memory registry is down" not in (entries[1].last_error or "")


async def test_a_lost_answer_is_retried_without_registering_twice(
    tmp_path: Path, memory_registry: tuple[str, MemoryRegistry]
) -> None:
    """The registry applies, the answer is lost; the retry finds the key: applied once."""
    uri, registry = memory_registry
    registry.lose_answers = 1
    with Outbox(tmp_path / "ob") as outbox:
        outbox.enqueue(uri, reg("1", alias="production"))
        report = await Drainer(outbox, opener=twin(registry)).drain(FAST, give_up_after=10)
        entry = outbox.entries()[0]
    assert report.pending == 0
    assert versions(registry) == [("m", "1")]
    assert (entry.state, entry.attempts) == (State.REGISTERED, 2)
    assert entry.result is not None
    assert entry.result.startswith("already")


async def test_a_conflicting_entry_is_rejected_and_the_next_one_applies(
    tmp_path: Path, memory_registry: tuple[str, MemoryRegistry]
) -> None:
    """Another artifact under the same version is rejected for good; later entries go on."""
    uri, registry = memory_registry
    with Outbox(tmp_path / "ob") as outbox:
        outbox.enqueue(uri, reg("1"))
        outbox.enqueue(uri, Registration.build(model="m", version="1", uri="s3://b/other/"))
        outbox.enqueue(uri, reg("2"))
        report = await Drainer(outbox, opener=twin(registry)).drain_once()
        states = [e.state for e in outbox.entries()]
    assert (report.registered, report.rejected, report.pending) == ([1, 3], [2], 0)
    assert states == [State.REGISTERED, State.REJECTED, State.REGISTERED]
    assert versions(registry) == [("m", "1"), ("m", "2")]


async def test_drain_retries_with_backoff_until_the_registry_heals(
    tmp_path: Path, memory_registry: tuple[str, MemoryRegistry]
) -> None:
    """Five failed passes later every entry is registered, once each."""
    uri, registry = memory_registry
    registry.fail(times=5)
    with Outbox(tmp_path / "ob") as outbox:
        for version in ("1", "2"):
            outbox.enqueue(uri, reg(version))
        report = await Drainer(outbox, opener=twin(registry)).drain(FAST, give_up_after=30)
        attempts = [e.attempts for e in outbox.entries()]
    assert (sorted(report.registered), report.pending) == ([1, 2], 0)
    assert versions(registry) == [("m", "1"), ("m", "2")]
    assert attempts == [6, 1]


async def test_drain_gives_up_at_its_timeout_with_entries_pending(
    tmp_path: Path, memory_registry: tuple[str, MemoryRegistry]
) -> None:
    """A registry that stays down: drain returns after its timeout with the entry pending."""
    uri, registry = memory_registry
    registry.fail()
    with Outbox(tmp_path / "ob") as outbox:
        outbox.enqueue(uri, reg("1"))
        report = await Drainer(outbox, opener=twin(registry)).drain(FAST, give_up_after=0.3)
        entry = outbox.entries()[0]
    assert report.pending == 1
    assert entry.state is State.QUEUED
    assert entry.attempts >= 2
    assert entry.last_error is not None
    assert "memory registry is down" in entry.last_error


async def test_publish_applies_earlier_entries_of_the_model_first(
    tmp_path: Path, memory_registry: tuple[str, MemoryRegistry]
) -> None:
    """Publishing v2 while v1 is queued registers v1, then v2, in one bounded try."""
    uri, registry = memory_registry
    with Outbox(tmp_path / "ob") as outbox:
        registry.fail()
        drainer = Drainer(outbox, SourceOptions(timeout=5), opener=twin(registry))
        queued = await publish(drainer, uri, reg("1"))
        registry.heal()
        done = await publish(drainer, uri, reg("2", alias="production"))
    assert (queued.state, done.state) == (State.QUEUED, State.REGISTERED)
    assert versions(registry) == [("m", "1"), ("m", "2")]


async def test_publish_leaves_the_entry_queued_when_another_drainer_holds_the_lock(
    tmp_path: Path, memory_registry: tuple[str, MemoryRegistry]
) -> None:
    """While another process drains, publish only queues (it never applies concurrently)."""
    uri, registry = memory_registry
    with Outbox(tmp_path / "ob") as outbox, outbox.drain_lock(1) as held:
        assert held
        other = Outbox(tmp_path / "ob")
        entry = await publish(
            Drainer(other, SourceOptions(timeout=0.2), opener=twin(registry)), uri, reg("1")
        )
        other.close()
    assert entry.state is State.QUEUED
    assert versions(registry) == []


async def test_a_registration_that_outlasts_the_budget_stays_queued(tmp_path: Path) -> None:
    """A registrar that never answers costs the publish timeout; the entry stays queued."""

    class Hanging:
        name = "hang://"

        async def register(self, registration: Registration) -> object:
            await asyncio.Event().wait()
            raise SourceUnavailable("unreachable")

        async def aclose(self) -> None:
            pass

    with Outbox(tmp_path / "ob") as outbox:
        drainer = Drainer(outbox, SourceOptions(timeout=0.3), opener=lambda _u, _o: Hanging())
        entry = await publish(drainer, "hang://", reg("1"))
    assert entry.state is State.QUEUED
    assert entry.last_error is not None
    assert "TimeoutError" in entry.last_error
