"""A process that prestages one digest through the node cache with a counting fetcher.

Run as ``python -m tests.stage.cache_worker LKG_DIR STAGING COUNTER GO DIGEST``: it waits for the
GO file, prestages, and prints ``{"digest": ..., "from_cache": ...}`` as JSON.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import orjson

from pointercache.model.candidate import Candidate
from pointercache.stage.fetchers import FetchOptions, FetchResult
from pointercache.stage.prestage import prestage
from pointercache.volume.cas import NodeCache

PAYLOAD = {"MLmodel": b"flavors: {}\n", "data/weights.bin": b"\x07" * 4096}


class CountingFetcher:
    """Our Fetcher twin: appends a line to COUNTER for every fetch, then writes PAYLOAD slowly."""

    def __init__(self, counter: Path) -> None:
        self.counter = counter

    async def fetch(self, uri: str, dest: Path) -> FetchResult:
        with self.counter.open("a") as fh:
            fh.write(f"{uri}\n")
        await asyncio.sleep(0.3)  # widen the window in which other processes want the digest
        for rel, data in PAYLOAD.items():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            (dest / rel).write_bytes(data)
        return FetchResult(is_dir=True, size_bytes=sum(len(v) for v in PAYLOAD.values()))

    async def aclose(self) -> None:
        pass


async def main(lkg_dir: Path, staging: Path, counter: Path, go: Path, digest: str) -> None:
    deadline = time.monotonic() + 30
    while not go.exists() and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    candidate = Candidate(model="recommender", version="8", uri="memory://shared", digest=digest)
    staged = await prestage(
        candidate,
        staging,
        fetch=FetchOptions(),
        cache=NodeCache(lkg_dir),
        fetcher=CountingFetcher(counter),
    )
    sys.stdout.write(
        orjson.dumps({"digest": staged.digest, "from_cache": staged.from_cache}).decode()
    )


if __name__ == "__main__":
    a = sys.argv[1:]
    asyncio.run(main(Path(a[0]), Path(a[1]), Path(a[2]), Path(a[3]), a[4]))
