"""``memory://name``: an in-process manifest registry, the twin of a real source for tests.

It parses and selects with the same ``pointercache.model.manifest`` code as the file, http and s3
sources, so upper layers see the same errors. It can be told to fail (``fail()``), to hang until
cancelled (``hang()``) or to answer again (``heal()``), and it counts calls. State lives in the
instance: a source gets the ``MemoryRegistry`` it is given (several sources may share one), or a
fresh one of its own.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import orjson

from pointercache.base.redact import redact_uri
from pointercache.errors import NotFound, PointercacheError, SourceUnavailable
from pointercache.model import manifest
from pointercache.resolve.sources import SourceOptions

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Mapping

    from pointercache.model.candidate import Candidate, Selector


class MemoryRegistry:
    """The shared state behind ``memory://`` sources of one name."""

    def __init__(self) -> None:
        self.manifests: dict[str, bytes] = {}
        self.error: PointercacheError | None = None
        self.hanging = False
        self.calls = 0
        self.generation = 0

    def set_manifest(self, model: str, doc: Mapping[str, Any] | bytes) -> None:
        """Store a manifest (a mapping is serialized; bytes are kept as given, even broken)."""
        self.manifests[model] = doc if isinstance(doc, bytes) else orjson.dumps(doc)
        self.generation += 1

    def fail(self, error: PointercacheError | None = None) -> None:
        """Make every resolution raise ``error`` (default: ``SourceUnavailable``)."""
        self.error = error or SourceUnavailable("memory registry is down")

    def hang(self) -> None:
        """Make every resolution wait until it is cancelled."""
        self.hanging = True

    def heal(self) -> None:
        """Answer normally again."""
        self.error = None
        self.hanging = False


class MemorySource:
    """A ``Source`` and ``WatchableSource`` backed by a ``MemoryRegistry``."""

    def __init__(
        self,
        uri: str = "memory://registry",
        options: SourceOptions | None = None,
        *,
        registry: MemoryRegistry | None = None,
    ) -> None:
        self.options = options or SourceOptions()
        self.name = redact_uri(uri)
        self.registry = registry if registry is not None else MemoryRegistry()

    async def resolve(self, model: str, selector: Selector) -> Candidate:
        """Select from the stored manifest, or fail/hang as told."""
        reg = self.registry
        reg.calls += 1
        if reg.hanging:
            await asyncio.Event().wait()
        if reg.error is not None:
            raise reg.error
        data = reg.manifests.get(model)
        if data is None:
            raise NotFound(f"{self.name}: no manifest for model {model!r}")
        parsed = manifest.parse(data, model=model, max_bytes=self.options.max_manifest_bytes)
        return parsed.select(selector, registry=self.name)

    async def changes(self) -> AsyncGenerator[None, None]:
        """Yield after each ``set_manifest`` (checked every 10 ms)."""
        seen = self.registry.generation
        while True:
            await asyncio.sleep(0.01)
            if self.registry.generation != seen:
                seen = self.registry.generation
                yield None

    async def aclose(self) -> None:
        """Nothing to release."""
