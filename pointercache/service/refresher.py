"""The sidecar's refresh loop: poll (jittered) and watch the registries, flip when they move.

A refresh never raises: every failure is recorded in ``RefreshState`` (shown by ``/status``) and
the last good version keeps being served. Revisions are claims of one registry
(``model.revision``): an answer below the revision the same registry claimed for the served
version (a lagging replica, a stale CDN edge) is refused — visibly: ``/status.refused``, a
warning, an Event, ``pointercache_refreshes_total{outcome="stale"}`` — until that registry has
kept giving it for ``stale_grace`` seconds; then it is accepted (``revision-reset``).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from pointercache.base.clock import utcnow
from pointercache.base.log import log
from pointercache.errors import PointercacheError, SignatureMismatch
from pointercache.model.candidate import Selector
from pointercache.model.pointer import Pointer
from pointercache.model.revision import Claim, is_rollback, same_version
from pointercache.resolve.chain import Attempt, Resolution
from pointercache.resolve.sources import CachingSource, WatchableSource
from pointercache.service.loaded import LoadOptions, LoadTracker
from pointercache.service.reporting import Reporter
from pointercache.service.stale import (
    Verdict,
    held_claim,
    judge,
    refused_message,
    reset_message,
)
from pointercache.service.state import BlockedFlip, Happening, Outcome, RefreshState
from pointercache.service.telemetry import Telemetry
from pointercache.sync.bootstrap import resolve_and_publish
from pointercache.sync.pipeline import Publisher
from pointercache.sync.wiring import Parts


@dataclass(frozen=True, slots=True)
class RefreshOptions:
    """How often the sidecar asks, and what else it prestages."""

    poll_interval: float = 15.0
    """Seconds between registry polls (``--poll-interval``)."""
    poll_jitter: float = 0.2
    """Random extra fraction of the interval, 0-1 (``--poll-jitter``)."""
    prefetch: Selector | None = None
    """Also prestage this selector without serving it (``--prefetch-selector``)."""
    stale_grace: float = 600.0
    """Seconds a registry must keep giving an answer below the revision it claimed for the
    served version before that answer is accepted (``--stale-grace``; 0: at once)."""


class Refresher:
    """Keeps the published version in step with the registries."""

    def __init__(
        self,
        parts: Parts,
        options: RefreshOptions | None = None,
        telemetry: Telemetry | None = None,
        reporter: Reporter | None = None,
        loads: LoadOptions | None = None,
    ) -> None:
        self.parts = parts
        self.target = parts.target
        self.options = options or RefreshOptions()
        self.state = RefreshState()
        self.telemetry = telemetry or Telemetry()
        self.reporter = reporter
        self.publisher = Publisher.for_parts(parts)
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self.telemetry.bind(self.state)
        self.loads = LoadTracker(parts.store, self.target.model, loads, telemetry=self.telemetry)
        self.loads.notify, self.loads.collect = self._loads_happened, self.collect
        self.publisher.holds.append(self.loads.protected)

    def load_current(self) -> None:
        """Read what the init container (or an earlier run) published, and its claim."""
        try:
            self.state.current = self.parts.store.current()
        except PointercacheError as exc:
            self.state.last_error = f"current pointer unreadable: {exc}"
            log.error("current-unreadable", error=exc)
        self.state.claim = held_claim(self.parts.store, self.state.current)
        if self.state.current is not None and self.state.current.source != "registry":
            self.state.fallback_reason = self.state.current.source_detail
        self.loads.restore(self.state.current)

    def trigger(self) -> None:
        """Ask the loop to refresh now (watch event or ``POST /refresh``)."""
        self._wake.set()

    async def refresh(self, reason: str = "poll", *, force: bool = False) -> Outcome:
        """Resolve from the registries and flip if they moved; return the outcome."""
        async with self._lock:
            started = time.monotonic()
            outcome = await self._refresh(reason, force=force)
            self.state.last_refresh = utcnow()
            self.telemetry.refreshed(outcome, time.monotonic() - started)
            return outcome

    async def _refresh(self, reason: str, *, force: bool) -> Outcome:
        if force:
            for source in self.parts.sources:
                if isinstance(source, CachingSource):
                    source.invalidate()
        if self.state.current is None:
            return await self._bootstrap()
        resolution, attempts = await self.parts.chain.from_registries(
            self.target.model, self.target.selector
        )
        if resolution is None:
            return self._no_answer(attempts)
        self.state.contacted()
        self.state.last_error = None
        outcome = await self._apply(resolution, reason)
        if self.options.prefetch is not None:
            await self._prefetch(self.options.prefetch)
        return outcome

    def _no_answer(self, attempts: list[Attempt]) -> Outcome:
        """No registry answered with a version: an outage, or the selector is gone."""
        summary = "; ".join(f"{a.name}: {a.reason}" for a in attempts) or "no registry"
        not_found = bool(attempts) and all(a.not_found for a in attempts)
        if not_found:
            self.state.blocked = None  # the blocked version is no longer what the selector names
            self.state.refused = None
        if self.state.last_error != summary:
            happening = (
                Happening.SELECTOR_NOT_FOUND if not_found else Happening.REGISTRY_UNAVAILABLE
            )
            self.state.record(happening, selector=str(self.target.selector), reason=summary)
        self.state.last_error = summary
        return Outcome.NOT_FOUND if not_found else Outcome.UNAVAILABLE

    async def _apply(self, resolution: Resolution, reason: str) -> Outcome:
        cand = resolution.candidate
        current = self.state.current
        offered = resolution.claim or Claim.of(cand)
        if current is not None and same_version(current, cand):
            confirmed, claim = await self.publisher.confirm(current, self.state.claim, offered)
            if confirmed is not current:
                message = f"registry confirms {cand.version}"
                await self._report(Happening.CONFIRMED, confirmed, message)
            self.state.current, self.state.claim = confirmed, claim
            self.state.confirm_served()
            self.state.fallback_reason = None
            self.state.blocked = None
            self.state.refused = None
            return Outcome.UNCHANGED
        blocked = self.state.blocked
        if blocked and (blocked.version, blocked.revision) == (cand.version, cand.revision):
            return Outcome.BLOCKED  # already refused and reported; wait for the registry to move
        verdict = judge(self.state, resolution, offered, self.options.stale_grace)
        if verdict is Verdict.REFUSE_NEW:
            refused = self.state.refused
            assert refused is not None  # judge records what it refuses
            fields = refused.to_dict()
            self.state.record(Happening.STALE_ANSWER, **fields)
            await self._report(Happening.STALE_ANSWER, None, refused_message(refused))
        if verdict in (Verdict.REFUSE_NEW, Verdict.REFUSE):
            return Outcome.STALE
        return await self._flip(resolution, reason, reset=verdict is Verdict.RESET)

    async def _flip(self, resolution: Resolution, reason: str, *, reset: bool = False) -> Outcome:
        cand = resolution.candidate
        previous = self.state.current
        held = self.state.claim
        try:
            adopted = await self.publisher.adopt(resolution)
        except SignatureMismatch as exc:
            self.state.blocked = BlockedFlip(cand.version, cand.revision, str(exc), exc.diff)
            self.state.record(
                Happening.BLOCKED, version=cand.version, reason=str(exc), diff=exc.diff
            )
            self.telemetry.blocked()
            await self._report(Happening.BLOCKED, None, f"version {cand.version} blocked: {exc}")
            return Outcome.BLOCKED
        except PointercacheError as exc:
            self.state.last_error = f"version {cand.version}: {type(exc).__name__}: {exc}"
            self.state.record(Happening.FLIP_FAILED, version=cand.version, error=exc)
            return Outcome.FAILED
        pointer = adopted.pointer
        served_before = self.state.served_before()
        self.state.current, self.state.claim = pointer, resolution.claim
        self.state.confirm_served()
        self.state.fallback_reason = None
        self.state.blocked = None
        self.state.refused = None
        if reset:
            self.telemetry.revision_reset()
            self.state.record(
                Happening.REVISION_RESET,
                version=pointer.version,
                revision=pointer.revision,
                held_revision=held.revision if held else None,
                registry=resolution.detail,
            )
            message = reset_message(resolution.detail, pointer, self.options.stale_grace)
            await self._report(Happening.REVISION_RESET, pointer, message)
        rollback = previous is not None and is_rollback(previous, pointer, served_before)
        happening = Happening.ROLLBACK if rollback else Happening.FLIPPED
        self.state.record(
            happening,
            version=pointer.version,
            revision=pointer.revision,
            previous=previous.version if previous else None,
            trigger=reason,
        )
        self.loads.flipped(previous, pointer)
        if not reset:
            await self._report(happening, pointer, f"now serving {pointer.version}")
        return Outcome.ROLLBACK if rollback else Outcome.FLIPPED

    async def _bootstrap(self) -> Outcome:
        """Nothing is published yet: walk the whole chain, as the init container does."""
        try:
            pointer = await resolve_and_publish(self.parts)
        except PointercacheError as exc:
            if self.state.last_error != str(exc):
                self.state.record(Happening.BOOTSTRAP_FAILED, reason=str(exc))
            self.state.last_error = str(exc)
            return Outcome.UNAVAILABLE
        self.state.current = pointer
        self.state.claim = held_claim(self.parts.store, pointer)
        if pointer.source == "registry":
            self.state.contacted()
            self.state.confirm_served()
        else:
            self.state.fallback_reason = pointer.source_detail
            self.telemetry.fallback(pointer.source)
        self.state.record(
            Happening.FLIPPED,
            version=pointer.version,
            source=pointer.source,
            revision=pointer.revision,
            previous=None,
            trigger="bootstrap",
        )
        self.loads.flipped(None, pointer)
        happening = Happening.FLIPPED if pointer.source == "registry" else Happening.FALLBACK
        message = f"now serving {pointer.version} from {pointer.source}"
        await self._report(happening, pointer, message)
        return Outcome.FLIPPED

    async def _prefetch(self, selector: Selector) -> None:
        resolution, _ = await self.parts.chain.from_registries(self.target.model, selector)
        prefetched = self.state.prefetched
        if resolution is None or (
            prefetched is not None and same_version(prefetched, resolution.candidate)
        ):
            return
        try:
            adopted = await self.publisher.install(resolution)
        except PointercacheError as exc:
            self.state.record(
                Happening.PREFETCH_FAILED, version=resolution.candidate.version, error=exc
            )
            return
        self.state.prefetched = adopted.pointer
        self.publisher.protect = {adopted.pointer.digest}
        self.state.record(Happening.PREFETCHED, version=adopted.pointer.version)

    async def collect(self) -> None:
        """Garbage-collect the volume now, between refreshes (a reload ended)."""
        async with self._lock:
            await asyncio.to_thread(self.publisher.collect, self.state.current)

    async def _loads_happened(self, happening: Happening, message: str, fields: Any) -> None:
        self.state.record(happening, **fields)
        await self._report(happening, self.state.current, message)

    async def _report(self, happening: Happening, pointer: Pointer | None, message: str) -> None:
        if self.reporter is None:
            return
        try:
            staged = [p.version for _, p in self.parts.store.versions(self.target.model)]
            await self.reporter.report(happening, pointer, message, staged, self.loads.loaded)
        except Exception as exc:
            log.warning("report-failed", event_name=happening.value, error=exc)

    async def run(self, stop: asyncio.Event) -> None:
        """Refresh on every poll period (with jitter), watch event or trigger until ``stop``."""
        watchers = [
            asyncio.create_task(self._watch(source), name=f"watch {source.name}")
            for source in self.parts.sources
            if isinstance(source, WatchableSource)
        ]
        current = self.state.current
        if current is not None:
            fell_back = current.source != "registry"
            if fell_back:  # the init container fell back before this process started
                self.telemetry.fallback(current.source)
            message = f"serving {current.version} from {current.source}: {current.source_detail}"
            happening = Happening.FALLBACK if fell_back else Happening.STARTED
            await self._report(happening, current, message)
        self.loads.started()
        try:
            while not stop.is_set():
                await self._until_stopped(self.safe_refresh("poll"), stop)
                await self._sleep(stop)
        finally:
            await self.loads.aclose()
            for task in watchers:
                task.cancel()
            for task in watchers:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    @staticmethod
    async def _until_stopped(coro: Coroutine[Any, Any, Outcome], stop: asyncio.Event) -> None:
        """Run ``coro``, cancelling it if ``stop`` is set first (SIGTERM during a download)."""
        task = asyncio.create_task(coro)
        stop_wait = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({task, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop_wait.cancel()
            if not task.done():
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def safe_refresh(self, reason: str, *, force: bool = False) -> Outcome:
        """``refresh`` that never raises: an unexpected error is recorded (``Outcome.ERROR``)."""
        try:
            return await self.refresh(reason, force=force)
        except Exception as exc:  # the sidecar never dies on a refresh error
            self.state.last_error = f"{type(exc).__name__}: {exc}"
            log.error("refresh-crashed", error=exc)
            return Outcome.ERROR

    async def _sleep(self, stop: asyncio.Event) -> None:
        base = self.options.poll_interval
        delay = base * (1 + random.random() * self.options.poll_jitter)  # noqa: S311
        stop_wait = asyncio.create_task(stop.wait())
        wake_wait = asyncio.create_task(self._wake.wait())
        try:
            await asyncio.wait(
                {stop_wait, wake_wait}, timeout=delay, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            stop_wait.cancel()
            wake_wait.cancel()
        self._wake.clear()

    async def _watch(self, source: WatchableSource) -> None:
        while True:
            try:
                async for _ in source.changes():
                    await self.safe_refresh("watch")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("watch-failed", error=exc)
            await asyncio.sleep(1.0)
