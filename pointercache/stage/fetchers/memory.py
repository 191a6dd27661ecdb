"""``memory://...``: artifacts held in a dict, the twin of a real fetcher for tests.

An object is either ``bytes`` (a single-file artifact) or a mapping ``{relpath: bytes}`` (a
directory tree). State lives in the instance: the ``objects`` it is given (or an empty store of
its own). ``failures`` makes a URI raise a chosen error; ``fetched`` records each URI fetched, in
order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from pointercache.base.redact import redact_uri
from pointercache.errors import ArtifactNotFound, FetchError, ForbiddenURI, TooLarge
from pointercache.stage.fetchers import FetchOptions, FetchResult

Artifact = bytes | Mapping[str, bytes]


class MemoryFetcher:
    """Writes in-memory artifacts at ``dest``; implements ``Fetcher``."""

    def __init__(
        self,
        options: FetchOptions | None = None,
        *,
        objects: Mapping[str, Artifact] | None = None,
    ) -> None:
        self.options = options or FetchOptions()
        self.objects: Mapping[str, Artifact] = {} if objects is None else objects
        self.failures: dict[str, FetchError] = {}
        self.fetched: list[str] = []

    async def fetch(self, uri: str, dest: Path) -> FetchResult:
        """Write the object named ``uri`` at ``dest``."""
        self.options.allow.check(uri)
        self.fetched.append(uri)
        await asyncio.sleep(0)
        if uri in self.failures:
            raise self.failures[uri]
        obj = self.objects.get(uri)
        if obj is None:
            raise ArtifactNotFound(f"{redact_uri(uri)}: no such object")
        size = len(obj) if isinstance(obj, bytes) else sum(len(v) for v in obj.values())
        if size > self.options.max_bytes:
            raise TooLarge(f"{redact_uri(uri)}: {size} bytes is over {self.options.max_bytes}")
        await asyncio.to_thread(_write, dest, obj, uri)
        if self.options.progress is not None:
            self.options.progress(size, size)
        return FetchResult(is_dir=not isinstance(obj, bytes), size_bytes=size)

    async def aclose(self) -> None:
        """Nothing to release."""


def _write(dest: Path, obj: Artifact, uri: str) -> None:
    if isinstance(obj, bytes):
        dest.write_bytes(obj)
        return
    for rel in obj:
        parts = PurePosixPath(rel).parts
        if not parts or rel.startswith("/") or ".." in parts:
            raise ForbiddenURI(f"{redact_uri(uri)}: entry {rel!r} escapes the artifact root")
    dest.mkdir()
    for rel, data in sorted(obj.items()):
        target = dest.joinpath(*PurePosixPath(rel).parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
