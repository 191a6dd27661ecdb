"""``Publisher.confirm``: a registry naming the served version again, on a real store."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from pointercache.base.clock import utc_after
from pointercache.model.candidate import DEFAULT_SELECTOR
from pointercache.model.pointer import Pointer
from pointercache.model.revision import Claim
from pointercache.stage.fetchers import FetchOptions
from pointercache.sync.pipeline import SEEN_REFRESH, Publisher
from pointercache.volume.lkg import NodeLKG
from pointercache.volume.store import Store
from tests.volume.artifacts import MODEL, install_version

REGISTRY = "file:///etc/pointercache/registry.json"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Publisher, Pointer]]:
    """A publisher over a store serving version 1, confirmed by REGISTRY ``seen`` s ago."""
    store = Store(tmp_path / "root")
    store.ensure_layout()
    with store.lock():
        version_dir, pointer = install_version(store, "1")
        pointer = pointer.with_provenance("registry", REGISTRY, registry_seen_at=utc_after(0))
        store.update_pointer(version_dir, pointer)
        store.publish(version_dir)
        lkg = NodeLKG(tmp_path / "node")
        yield Publisher(store, fetch=FetchOptions(), lkg=lkg), pointer


def _aged(publisher: Publisher, pointer: Pointer, seconds: float) -> Pointer:
    """Rewrite the served pointer as if the registry last confirmed it ``seconds`` ago."""
    old = dataclasses.replace(pointer, registry_seen_at=utc_after(-seconds))
    version_dir = publisher.store.current_dir()
    assert version_dir is not None
    publisher.store.update_pointer(version_dir, old)
    return old


async def test_an_unchanged_confirmation_is_not_written_again_at_once(
    served: tuple[Publisher, Pointer],
) -> None:
    """The same registry at the same revision, confirmed a minute ago: nothing is rewritten."""
    publisher, pointer = served
    recent = _aged(publisher, pointer, 60)
    claim = Claim(REGISTRY, recent.revision)
    confirmed, held = await publisher.confirm(recent, claim, claim)
    assert confirmed is recent and held == claim
    assert publisher.store.current() == recent


async def test_an_old_confirmation_refreshes_registry_seen_at(
    served: tuple[Publisher, Pointer],
) -> None:
    """Confirmed longer ago than SEEN_REFRESH: pointer.json and the node LKG get the new time,
    so the staleness others read from them (annotation, fleet) stays bounded."""
    publisher, pointer = served
    old = _aged(publisher, pointer, SEEN_REFRESH + 60)
    claim = Claim(REGISTRY, old.revision)
    confirmed, _ = await publisher.confirm(old, claim, claim)
    assert confirmed is not old
    assert confirmed.registry_seen_at is not None and old.registry_seen_at is not None
    assert confirmed.registry_seen_at > old.registry_seen_at
    assert publisher.store.current() == confirmed
    assert publisher.lkg is not None
    assert publisher.lkg.read(MODEL, DEFAULT_SELECTOR) == confirmed


async def test_a_higher_revision_of_the_same_version_is_written_at_once(
    served: tuple[Publisher, Pointer],
) -> None:
    """The registry moved its revision forward for the same version: written without waiting."""
    publisher, pointer = served
    recent = _aged(publisher, pointer, 1)
    held = Claim(REGISTRY, recent.revision)
    confirmed, claim = await publisher.confirm(recent, held, Claim(REGISTRY, recent.revision + 5))
    assert claim.revision == recent.revision + 5
    assert publisher.store.current() == confirmed
    assert confirmed.revision == recent.revision + 5
