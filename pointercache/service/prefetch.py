"""Two-phase promotion's first phase: prestage the ``--prefetch-selector`` version, unserved.

After each refresh that reached a registry, ``Prefetcher.after_refresh`` resolves the prefetch
selector (bounded like any resolution) and, when it names a version that is neither prefetched
nor held off after a failure, installs it in the background — one at a time, never flipped —
so ``pointercache promote`` can see it staged on every pod. The install takes the refresher's
volume lock for its local part only; the download runs beside the refresh loop like a flight.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from pointercache.base.redact import redact_text
from pointercache.model.revision import same_version
from pointercache.service.state import Happening

if TYPE_CHECKING:
    from pointercache.model.candidate import Selector
    from pointercache.resolve.chain import Resolution
    from pointercache.service.failures import FailedVersions
    from pointercache.service.state import RefreshState
    from pointercache.service.view import VolumeView
    from pointercache.sync.pipeline import Publisher
    from pointercache.sync.wiring import Parts


class Prefetcher:
    """Installs the prefetch selector's version in the background (see the module docstring)."""

    def __init__(
        self,
        parts: Parts,
        selector: Selector,
        *,
        publisher: Publisher,
        state: RefreshState,
        failures: FailedVersions,
        volume: asyncio.Lock,
        view: VolumeView,
    ) -> None:
        self.parts = parts
        self.selector = selector
        self.publisher = publisher
        self.state = state
        self.failures = failures
        self.volume = volume
        self.view = view
        self.task: asyncio.Task[None] | None = None

    async def after_refresh(self) -> None:
        """Resolve the prefetch selector; start installing a new answer (one at a time)."""
        if self.task is not None and not self.task.done():
            return
        model = self.parts.target.model
        resolution, _ = await self.parts.chain.from_registries(model, self.selector)
        prefetched = self.state.prefetched
        if resolution is None or (
            prefetched is not None and same_version(prefetched, resolution.candidate)
        ):
            return
        if self.failures.holding(resolution.candidate) is None:
            self.task = asyncio.create_task(self._install(resolution), name="prefetch")

    async def _install(self, resolution: Resolution) -> None:
        cand = resolution.candidate
        try:
            prepared = await self.publisher.prepare(resolution)
            async with self.volume:
                adopted = await self.publisher.install_prepared(prepared)
        except Exception as exc:  # any failure: recorded and held off, never raised
            error = redact_text(f"version {cand.version}: {type(exc).__name__}: {exc}")
            self.failures.failed(cand, error)
            self.state.record(Happening.PREFETCH_FAILED, version=cand.version, error=error)
            return
        self.failures.forget(cand)
        self.state.prefetched = adopted.pointer
        self.publisher.protect = {adopted.pointer.digest}
        self.view.invalidate()
        self.state.record(Happening.PREFETCHED, version=adopted.pointer.version)

    async def stop(self) -> None:
        """Cancel an install in progress (the process is stopping)."""
        if self.task is not None and not self.task.done():
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
