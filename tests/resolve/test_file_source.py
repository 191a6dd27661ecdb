"""The file:// manifest source: bounded reads, errors, watching incl. kubelet's ..data swap."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path
from typing import Any

import orjson
import pytest

from pointercache.errors import ConfigError, InvalidManifest, SourceUnavailable
from pointercache.model.candidate import Selector
from pointercache.resolve.sources import SourceOptions, WatchableSource, open_source
from pointercache.resolve.sources.file import FileManifestSource

WAIT = 30.0  # generous upper bound for an inotify event to arrive; never a timing assertion
PROD = Selector.parse("alias:production")


def _manifest(version: str, revision: int) -> bytes:
    doc: dict[str, Any] = {
        "schema": 1,
        "model": "recommender",
        "revision": revision,
        "aliases": {"production": version},
        "versions": {version: {"uri": f"file:///models/{version}"}},
    }
    return orjson.dumps(doc)


class Kubelet:
    """Writes a ConfigMap volume the way the kubelet's AtomicWriter does."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.generation = 0

    def write(self, files: dict[str, bytes]) -> None:
        self.generation += 1
        new = f"..2026_11_22_11_00_{self.generation:02d}.{123456789 + self.generation}"
        (self.root / new).mkdir()
        for name, data in files.items():
            (self.root / new / name).write_bytes(data)
        data_link = self.root / "..data"
        old = os.readlink(data_link) if data_link.is_symlink() else None
        tmp = self.root / "..data_tmp"
        tmp.symlink_to(new)
        tmp.rename(data_link)
        for name in files:
            user = self.root / name
            if not user.is_symlink():
                user.symlink_to(f"..data/{name}")
        if old is not None:
            shutil.rmtree(self.root / old)


async def test_resolves_from_a_plain_file(tmp_path: Path) -> None:
    """A file:// registry reads and selects from the manifest on each resolution."""
    path = tmp_path / "recommender.json"
    path.write_bytes(_manifest("8", 1))
    source = open_source(path.as_uri())
    assert isinstance(source, FileManifestSource)
    assert (await source.resolve("recommender", PROD)).version == "8"
    path.write_bytes(_manifest("9", 2))
    cand = await source.resolve("recommender", PROD)
    assert (cand.version, cand.revision, cand.registry) == ("9", 2, path.as_uri())


async def test_missing_file_is_unavailable(tmp_path: Path) -> None:
    """A manifest file that does not exist makes the source unavailable (not a crash)."""
    source = FileManifestSource((tmp_path / "absent.json").as_uri())
    with pytest.raises(SourceUnavailable, match="missing"):
        await source.resolve("recommender", PROD)


async def test_oversized_file_is_rejected_by_size(tmp_path: Path) -> None:
    """A file larger than max_manifest_bytes is refused as InvalidManifest after a bounded read."""
    path = tmp_path / "big.json"
    path.write_bytes(_manifest("8", 1) + b" " * 5000)
    source = FileManifestSource(path.as_uri(), SourceOptions(max_manifest_bytes=1000))
    with pytest.raises(InvalidManifest, match="1001 bytes is over the 1000 limit"):
        await source.resolve("recommender", PROD)


@pytest.mark.parametrize(
    "uri", ["file://host/x.json", "file:///a/../b.json", "file:///x.json?token=1", "file:x.json"]
)
def test_bad_file_uris_are_config_errors(uri: str) -> None:
    """A file URI with a host, dot-dot, a query or a relative path is a configuration error."""
    with pytest.raises(ConfigError):
        FileManifestSource(uri)


async def test_watch_yields_on_plain_rewrite_but_not_on_identical_content(tmp_path: Path) -> None:
    """After the one sync when the watch goes live, identical bytes yield nothing, a change once."""
    path = tmp_path / "recommender.json"
    path.write_bytes(_manifest("8", 1))
    source = FileManifestSource(path.as_uri())
    assert isinstance(source, WatchableSource)
    seen: list[str] = []
    changes = source.changes()

    async def consume() -> None:
        async for _ in changes:
            seen.append((await source.resolve("recommender", PROD)).version)
            if seen[-1] == "9":
                return

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.5)  # let the watch start (ordering help only)
    path.write_bytes(_manifest("8", 1))  # same bytes: must not yield
    path.touch()
    await asyncio.sleep(1.0)  # the no-op events are handled before the real change
    path.write_bytes(_manifest("9", 2))
    await asyncio.wait_for(task, WAIT)
    await changes.aclose()
    assert seen == ["8", "9"]


async def test_a_change_made_before_the_watch_is_live_is_not_lost(tmp_path: Path) -> None:
    """The first yield comes once the watch is in place, so an earlier change is picked up."""
    path = tmp_path / "recommender.json"
    path.write_bytes(_manifest("8", 1))
    source = FileManifestSource(path.as_uri())
    changes = source.changes()
    first = asyncio.create_task(anext(changes))
    await asyncio.sleep(0)  # the watcher has read its baseline, but is not live yet
    path.write_bytes(_manifest("9", 2))
    await asyncio.wait_for(first, WAIT)
    assert (await source.resolve("recommender", PROD)).version == "9"
    await changes.aclose()


async def test_watch_detects_kubelet_data_symlink_swap(tmp_path: Path) -> None:
    """A ConfigMap update (new timestamped dir, ..data_tmp renamed over ..data) is detected."""
    volume = tmp_path / "configmap"
    volume.mkdir()
    kubelet = Kubelet(volume)
    kubelet.write({"recommender.json": _manifest("8", 1), "other.json": b"{}"})
    source = FileManifestSource((volume / "recommender.json").as_uri())
    assert (await source.resolve("recommender", PROD)).version == "8"
    seen: list[str] = []
    changes = source.changes()

    async def consume() -> None:
        async for _ in changes:
            seen.append((await source.resolve("recommender", PROD)).version)
            if seen[-1] == "10":
                return

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.5)  # let the watch start (ordering help only)
    kubelet.write({"recommender.json": _manifest("9", 2), "other.json": b"{}"})
    async with asyncio.timeout(WAIT):
        while not seen:
            await asyncio.sleep(0.05)
    # a swap that changes only another key is not a change of this manifest
    kubelet.write({"recommender.json": _manifest("9", 2), "other.json": b'{"a": 1}'})
    await asyncio.sleep(1.0)  # ordering help only
    kubelet.write({"recommender.json": _manifest("10", 3), "other.json": b'{"a": 1}'})
    await asyncio.wait_for(task, WAIT)
    await changes.aclose()
    assert seen == ["9", "10"]
    assert not (volume / "..data_tmp").exists()
