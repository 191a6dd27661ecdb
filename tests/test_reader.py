"""The reader API for model containers: current(), wait() and watch() against a live publisher."""

from __future__ import annotations

import itertools
import random
import threading
import time
from pathlib import Path

import pytest

from pointercache import reader
from pointercache.model.digest import tree_digest
from pointercache.volume.store import Store
from tests.volume.artifacts import install_version

HANDSHAKE = 20.0
"""Upper bound for one step of the handshake; only reached when the code under test is broken."""


def _publish(store: Store, version: str) -> str:
    version_dir, _ = install_version(store, version)
    store.publish(version_dir)
    return version_dir.name


def _check(loaded: reader.LoadedModel) -> str:
    assert loaded.path == loaded.version_dir / "model"
    assert tree_digest(loaded.path) == (loaded.pointer.digest, loaded.pointer.size_bytes)
    return loaded.version_dir.name


def test_current_is_none_before_anything_is_published(tmp_path: Path) -> None:
    """No root or an empty store both read as 'nothing published' rather than an error."""
    assert reader.current(tmp_path / "missing") is None
    store = Store(tmp_path / "root")
    with store.lock():
        install_version(store, "1")
    assert reader.current(tmp_path / "root") is None


def test_current_reads_pointer_and_model_from_one_version(tmp_path: Path) -> None:
    """current() returns the pointer and model path of the version current resolves to."""
    store = Store(tmp_path / "root")
    with store.lock():
        name = _publish(store, "1")
    loaded = reader.current(tmp_path / "root")
    assert loaded is not None
    assert _check(loaded) == name
    assert loaded.pointer == store.current()


def test_wait_times_out_with_timeout_error(tmp_path: Path) -> None:
    """wait() on a volume where nothing gets published raises TimeoutError."""
    (tmp_path / "root").mkdir()
    with pytest.raises(TimeoutError):
        reader.wait(tmp_path / "root", timeout=0.3)


def test_wait_returns_once_a_publisher_thread_publishes(tmp_path: Path) -> None:
    """wait() started before the root even exists returns the first published version."""
    root = tmp_path / "root"
    published: list[str] = []

    def publisher() -> None:
        time.sleep(0.2)
        store = Store(root)
        with store.lock():
            published.append(_publish(store, "1"))

    thread = threading.Thread(target=publisher)
    thread.start()
    try:
        loaded = reader.wait(root, timeout=HANDSHAKE, poll=0.05)
    finally:
        thread.join()
    assert _check(loaded) == published[0]


def test_watch_yields_each_new_version_exactly_once(tmp_path: Path) -> None:
    """watch() yields the current version, then every flip once; pointer rewrites add nothing.

    The poll interval is 30 s, so the flips must be seen through filesystem events on the
    renamed symlink.
    """
    root = tmp_path / "root"
    store = Store(root)
    with store.lock():
        published = [_publish(store, "0")]
    seen = threading.Semaphore(0)
    stop = threading.Event()

    def publisher() -> None:
        with store.lock():
            for version in ["1", "2", "3", "4"]:
                if not seen.acquire(timeout=HANDSHAKE):
                    return
                current = store.current_dir()
                pointer = store.current()
                assert current is not None and pointer is not None
                store.update_pointer(current, pointer.with_provenance("lkg-node", "rewrite"))
                (root / f"unrelated-{version}").write_text("noise")
                time.sleep(0.5)  # room for a wrong duplicate yield to show up
                published.append(_publish(store, version))
        seen.acquire(timeout=HANDSHAKE)
        stop.set()

    thread = threading.Thread(target=publisher)
    thread.start()
    yielded: list[str] = []
    try:
        for loaded in reader.watch(root, stop=stop, timeout=60, poll=30):
            yielded.append(_check(loaded))
            seen.release()
    finally:
        stop.set()
        thread.join()
    assert yielded == published
    assert len(yielded) == 5


def test_watch_never_misses_the_last_flip_of_a_burst(tmp_path: Path) -> None:
    """Under fast flips watch() may skip intermediate versions but always ends on the last one."""
    root = tmp_path / "root"
    store = Store(root)
    published: list[str] = []
    yielded: list[str] = []
    stop = threading.Event()

    def publisher() -> None:
        rng = random.Random(7)
        with store.lock():
            for version in range(12):
                published.append(_publish(store, str(version)))
                store.gc()
                time.sleep(rng.uniform(0, 0.03))
        deadline = time.monotonic() + HANDSHAKE
        while not (yielded and yielded[-1] == published[-1]) and time.monotonic() < deadline:
            time.sleep(0.01)
        stop.set()

    thread = threading.Thread(target=publisher)
    thread.start()
    try:
        for loaded in reader.watch(root, stop=stop, timeout=60, poll=0.2):
            try:
                yielded.append(_check(loaded))
            except FileNotFoundError:
                yielded.append(loaded.version_dir.name)  # collected under a slow reader: allowed
    finally:
        stop.set()
        thread.join()
    assert yielded[-1] == published[-1]
    assert all(a != b for a, b in itertools.pairwise(yielded))
    order = {name: index for index, name in enumerate(published)}
    assert [order[name] for name in yielded] == sorted(order[name] for name in yielded)


def test_watch_ends_at_its_timeout_when_nothing_is_published(tmp_path: Path) -> None:
    """watch() on an empty volume yields nothing and returns once the timeout passes."""
    (tmp_path / "root").mkdir()
    assert list(reader.watch(tmp_path / "root", timeout=0.3, poll=0.1)) == []
