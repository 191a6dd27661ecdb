"""``file:///path/model.json``: a local or mounted manifest (a ConfigMap volume, a hostPath).

The file is read (bounded) in a thread on each resolution, the way every node-local file is
(``volume.nodefile``: non-blocking, so a FIFO in its place cannot hold the thread; the
ConfigMap's ``..data`` links are followed, but must lead to a regular file). ``changes()``
watches the file's *parent directory* with watchfiles and re-reads the file on any event,
yielding only when the bytes differ. Event types and mtimes are never trusted: the kubelet
updates a ConfigMap volume by renaming a ``..data`` symlink over the old one, so the watched file
(``x.json -> ..data/x.json``) never sees an event of its own. A periodic re-read (every
``resync`` seconds) covers missed events.
"""

from __future__ import annotations

import asyncio
import errno
from typing import TYPE_CHECKING

from pointercache.base.log import log
from pointercache.base.redact import redact_uri
from pointercache.errors import SourceUnavailable, UnsafeNodeFile
from pointercache.model import manifest
from pointercache.model.uris import file_path
from pointercache.resolve.sources import SourceOptions
from pointercache.volume.nodefile import read_node_file

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator

    from pointercache.model.candidate import Candidate, Selector

WATCH_TICK_MS = 1_000
"""How long the watch thread blocks before checking for cancellation (ms)."""
DEBOUNCE_MS = 200
"""Events closer together than this are grouped into one re-read (ms)."""


class FileManifestSource:
    """A manifest in a file; implements ``Source`` and ``WatchableSource``."""

    def __init__(self, uri: str, options: SourceOptions | None = None) -> None:
        self.options = options or SourceOptions()
        self.path = file_path(uri)
        self.name = redact_uri(uri)
        self.resync = self.options.file_resync

    def _read(self) -> bytes:
        try:
            return read_node_file(
                self.path, max_bytes=self.options.max_manifest_bytes, follow=True, keep_over=True
            )
        except FileNotFoundError as exc:
            raise SourceUnavailable(f"{self.name}: manifest file is missing") from exc
        except UnsafeNodeFile as exc:
            raise SourceUnavailable(f"{self.name}: {exc}") from exc
        except OSError as exc:
            reason = errno.errorcode.get(exc.errno or 0, "error")
            raise SourceUnavailable(f"{self.name}: cannot read manifest ({reason})") from exc

    async def read(self) -> bytes:
        """Read the manifest's bytes (at most ``max_manifest_bytes + 1``) in a thread."""
        return await asyncio.to_thread(self._read)

    async def resolve(self, model: str, selector: Selector) -> Candidate:
        """Read, validate and select; ``SourceUnavailable``, ``InvalidManifest`` or ``NotFound``."""
        data = await self.read()
        parsed = manifest.parse(data, model=model, max_bytes=self.options.max_manifest_bytes)
        return parsed.select(selector, registry=self.name)

    async def _snapshot(self) -> bytes | None:
        try:
            return await self.read()
        except SourceUnavailable:
            return None

    async def changes(self) -> AsyncGenerator[None, None]:
        """Yield once the watch is live, then each time the file's bytes change.

        The first yield closes the gap between the caller's last read and the moment the watch
        was established (list-then-watch): a change made in between is not lost.
        """
        from watchfiles import awatch

        parent = self.path.parent
        if not parent.is_dir():
            raise SourceUnavailable(f"{self.name}: directory {parent} does not exist")
        last = await self._snapshot()
        idle = 0.0
        live = False
        async for events in awatch(
            parent,
            watch_filter=None,
            recursive=False,
            debounce=DEBOUNCE_MS,
            rust_timeout=WATCH_TICK_MS,
            yield_on_timeout=True,
        ):
            if not live:  # the first tick comes once the OS watch is in place
                live = True
                last = await self._snapshot()
                yield None
                continue
            if not events:
                idle += WATCH_TICK_MS / 1000
                if idle < self.resync:
                    continue
            idle = 0.0
            current = await self._snapshot()
            if current != last:
                last = current
                log.debug("manifest-changed", source=self.name)
                yield None

    async def aclose(self) -> None:
        """Nothing to release: each read opens and closes the file."""
