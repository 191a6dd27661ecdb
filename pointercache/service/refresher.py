"""The sidecar's refresh loop: poll (jittered) and watch the registries, flip when they move.

A refresh only resolves (the registries, each within its timeout) and decides; it never waits for
a download. A new version is adopted in the background as a flight (``service.inflight``): the
loop keeps polling meanwhile, a newer answer (or the served version named again: a rollback)
pre-empts a download, ``POST /refresh`` answers at once, and ``/status`` shows the download's
progress. A version that failed to download or verify is held off with exponential backoff
(``service.failures``) instead of being fetched again on every poll.

A refresh never raises: every failure is recorded in ``RefreshState`` (shown by ``/status``) and
the last good version keeps being served. Revisions only move forward (``model.revision``): an
answer with a lower revision than the one served — or than the one being downloaded — (a lagging
replica, a stale CDN edge) is refused and recorded. Changes of the volume (a flip, a
confirmation, a prefetched install) happen one at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from pointercache.adapters.retry import Backoff
from pointercache.base.clock import utcnow
from pointercache.base.log import log
from pointercache.base.redact import redact_text
from pointercache.errors import PointercacheError, SignatureMismatch
from pointercache.model.candidate import Candidate, Selector
from pointercache.model.pointer import Pointer
from pointercache.model.revision import is_rollback, is_stale, same_candidate, same_version
from pointercache.resolve.chain import Resolution
from pointercache.resolve.sources import CachingSource, WatchableSource
from pointercache.service.failures import DEFAULT_BACKOFF, FailedVersions
from pointercache.service.inflight import Flight, Flights, Phase
from pointercache.service.prefetch import Prefetcher
from pointercache.service.reporting import Reporter
from pointercache.service.state import BlockedFlip, Happening, Outcome, RefreshState
from pointercache.service.telemetry import Telemetry
from pointercache.service.view import VolumeView
from pointercache.sync.bootstrap import resolve_and_publish
from pointercache.sync.pipeline import Adopted, Publisher
from pointercache.sync.wiring import Parts


@dataclass(frozen=True, slots=True)
class RefreshOptions:
    """How often the sidecar asks, what else it prestages, how long a failure is held off."""

    poll_interval: float = 15.0
    """Seconds between registry polls (``--poll-interval``)."""
    poll_jitter: float = 0.2
    """Random extra fraction of the interval, 0-1 (``--poll-jitter``)."""
    prefetch: Selector | None = None
    """Also prestage this selector without serving it (``--prefetch-selector``)."""
    failure_backoff: Backoff = DEFAULT_BACKOFF
    """Hold-off of a version that failed: 15 s after the first failure, doubling to 15 min."""


class Refresher:
    """Keeps the published version in step with the registries."""

    def __init__(
        self,
        parts: Parts,
        options: RefreshOptions | None = None,
        telemetry: Telemetry | None = None,
        reporter: Reporter | None = None,
    ) -> None:
        self.parts = parts
        self.target = parts.target
        self.options = options or RefreshOptions()
        self.state = RefreshState()
        self.telemetry = telemetry or Telemetry()
        self.reporter = reporter
        self.publisher = Publisher.for_parts(parts)
        self.flights = Flights()
        """The adoption running in the background, if any."""
        self.failures = FailedVersions(self.options.failure_backoff)
        """Versions held off after a failure."""
        self.view = VolumeView(parts)
        """``/status``'s view of the files, read off the loop."""
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()  # one resolution at a time
        self._volume = asyncio.Lock()  # one change of the volume at a time
        self.prefetcher: Prefetcher | None = None
        """Installs ``--prefetch-selector``'s version in the background, if set."""
        if self.options.prefetch is not None:
            self.prefetcher = Prefetcher(
                parts,
                self.options.prefetch,
                publisher=self.publisher,
                state=self.state,
                failures=self.failures,
                volume=self._volume,
                view=self.view,
            )
        self.telemetry.bind(self.state)

    async def load_current(self) -> None:
        """Read what the init container (or an earlier run) published."""
        try:
            self.state.current = await asyncio.to_thread(self.parts.store.current)
        except PointercacheError as exc:
            self.state.last_error = f"current pointer unreadable: {exc}"
            log.error("current-unreadable", error=exc)
        if self.state.current is not None and self.state.current.source != "registry":
            self.state.fallback_reason = self.state.current.source_detail

    def trigger(self) -> None:
        """Ask the loop to refresh now (watch event or ``POST /refresh``)."""
        self._wake.set()

    async def refresh(self, reason: str = "poll", *, force: bool = False) -> Outcome:
        """Resolve from the registries and act on the answer; return the outcome.

        ``IN_PROGRESS`` when a download runs in the background (``settled`` waits for it).
        ``force`` (``POST /refresh``) bypasses source caches and the hold-off of failed versions.
        """
        async with self._lock:
            started = time.monotonic()
            outcome = await self._refresh(reason, force=force, started=started)
            self.state.last_refresh = utcnow()
            if outcome is not Outcome.IN_PROGRESS:
                self.telemetry.refreshed(outcome, time.monotonic() - started)
            return outcome

    async def settled(self, within: float) -> Outcome | None:
        """The outcome of the download in progress once it ends within ``within`` s, else None."""
        flight = self.flights.current
        if flight is None or flight.task is None:
            return None
        done, _ = await asyncio.wait({flight.task}, timeout=max(within, 0.0))
        if not done or flight.task.cancelled() or flight.task.exception() is not None:
            return None
        outcome: Outcome = flight.task.result()
        return outcome

    async def _refresh(self, reason: str, *, force: bool, started: float) -> Outcome:
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
            summary = "; ".join(f"{a.name}: {a.reason}" for a in attempts) or "no registry"
            if self.state.last_error != summary:
                self.state.record(Happening.REGISTRY_UNAVAILABLE, reason=summary)
            self.state.last_error = summary
            return Outcome.UNAVAILABLE
        self.state.contacted()
        outcome = await self._apply(resolution, reason, force=force, started=started)
        if self.prefetcher is not None:
            await self.prefetcher.after_refresh()
        return outcome

    async def _apply(
        self, resolution: Resolution, reason: str, *, force: bool, started: float
    ) -> Outcome:
        cand = resolution.candidate
        early = await self._against_flight(resolution)
        if early is not None:
            return early
        current = self.state.current
        if current is not None and same_version(current, cand):
            return await self._confirm(current, resolution)
        blocked = self.state.blocked
        if blocked and (blocked.version, blocked.revision) == (cand.version, cand.revision):
            return Outcome.BLOCKED  # already refused and reported; wait for the registry to move
        if current is not None and is_stale(cand.revision, current.revision):
            return self._stale(resolution, current.revision)
        held = None if force else self.failures.holding(cand)
        if held is not None:
            log.debug("held-off", version=cand.version, failures=held.failures)
            return Outcome.FAILED
        self.flights.start(resolution, reason, self._fly, started=started)
        return Outcome.IN_PROGRESS

    async def _against_flight(self, resolution: Resolution) -> Outcome | None:
        """Weigh an answer against the download in flight: the same candidate goes on; an
        answer older than it is stale; any other pre-empts it (then None: decide as usual)."""
        cand = resolution.candidate
        flight = self.flights.current
        if flight is None:
            return None
        if same_candidate(flight.candidate, cand):
            return Outcome.IN_PROGRESS  # already on its way
        if is_stale(cand.revision, flight.candidate.revision):
            return self._stale(resolution, flight.candidate.revision)
        why = f"the registry now names version {cand.version}"
        gone = await self.flights.preempt(why)
        if gone is not None:
            got = gone.watch.to_dict()
            self.state.record(
                Happening.PREEMPTED,
                version=gone.candidate.version,
                by=cand.version,
                bytes=got["bytes"],
                total=got["total"],
            )
        return None

    def _stale(self, resolution: Resolution, served_revision: int) -> Outcome:
        cand = resolution.candidate
        self.state.record(
            Happening.STALE_ANSWER,
            version=cand.version,
            revision=cand.revision,
            served_revision=served_revision,
            registry=resolution.detail,
        )
        return Outcome.STALE

    async def _confirm(self, current: Pointer, resolution: Resolution) -> Outcome:
        cand = resolution.candidate
        self.state.confirm_served()  # the registry's answer is the confirmation, not our write
        async with self._volume:
            confirmed = await self.publisher.confirm(current, resolution.detail, cand.revision)
        if confirmed is not current:
            await self._report(Happening.CONFIRMED, confirmed, f"registry confirms {cand.version}")
        self.state.current = confirmed
        self.state.fallback_reason = None
        self.state.blocked = None
        self.state.last_error = None
        return Outcome.UNCHANGED

    async def _fly(self, flight: Flight) -> Outcome:
        """Adopt ``flight``'s candidate: download (pre-emptible), then install and flip."""
        cand = flight.candidate
        self.state.record(
            Happening.DOWNLOADING,
            version=cand.version,
            revision=cand.revision,
            trigger=flight.trigger,
        )
        try:
            prepared = await self.publisher.prepare(flight.resolution, progress=flight.watch)
            flight.phase = Phase.INSTALLING
            async with self._volume:
                adopted = await self.publisher.commit(prepared)
        except SignatureMismatch as exc:
            outcome = await self._blocked(cand, exc)
        except Exception as exc:  # any failure of one candidate: recorded, held off
            outcome = self._failed(cand, exc)
        else:
            outcome = await self._flipped(adopted, flight)
        self.telemetry.refreshed(outcome, time.monotonic() - flight.started)
        self.view.invalidate()
        return outcome

    async def _blocked(self, cand: Candidate, exc: SignatureMismatch) -> Outcome:
        self.state.blocked = BlockedFlip(cand.version, cand.revision, str(exc), exc.diff)
        self.state.record(Happening.BLOCKED, version=cand.version, reason=str(exc), diff=exc.diff)
        self.telemetry.blocked()
        await self._report(Happening.BLOCKED, None, f"version {cand.version} blocked: {exc}")
        return Outcome.BLOCKED

    def _failed(self, cand: Candidate, exc: Exception) -> Outcome:
        error = redact_text(f"version {cand.version}: {type(exc).__name__}: {exc}")
        held = self.failures.failed(cand, error)
        self.state.last_error = error
        self.state.record(
            Happening.FLIP_FAILED,
            version=cand.version,
            error=error,
            failures=held.failures,
            retry_in_s=round(held.retry_at - time.monotonic(), 1),
        )
        return Outcome.FAILED

    async def _flipped(self, adopted: Adopted, flight: Flight) -> Outcome:
        pointer = adopted.pointer
        previous = self.state.current
        served_before = self.state.served_before()
        self.failures.forget(flight.candidate)
        self.state.current = pointer
        self.state.confirm_served()
        self.state.fallback_reason = None
        self.state.blocked = None
        self.state.last_error = None
        self.state.lkg_error = "; ".join(adopted.warnings) or None
        rollback = previous is not None and is_rollback(previous, pointer, served_before)
        happening = Happening.ROLLBACK if rollback else Happening.FLIPPED
        self.state.record(
            happening,
            version=pointer.version,
            revision=pointer.revision,
            previous=previous.version if previous else None,
            trigger=flight.trigger,
        )
        await self._report(happening, pointer, f"now serving {pointer.version}")
        return Outcome.ROLLBACK if rollback else Outcome.FLIPPED

    async def _bootstrap(self) -> Outcome:
        """Nothing is published yet: walk the whole chain, as the init container does."""
        try:
            async with self._volume:
                pointer = await resolve_and_publish(self.parts)
        except PointercacheError as exc:
            if self.state.last_error != str(exc):
                self.state.record(Happening.BOOTSTRAP_FAILED, reason=str(exc))
            self.state.last_error = str(exc)
            return Outcome.UNAVAILABLE
        self.state.current = pointer
        self.view.invalidate()
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
        happening = Happening.FLIPPED if pointer.source == "registry" else Happening.FALLBACK
        message = f"now serving {pointer.version} from {pointer.source}"
        await self._report(happening, pointer, message)
        return Outcome.FLIPPED

    async def _report(self, happening: Happening, pointer: Pointer | None, message: str) -> None:
        if self.reporter is None:
            return
        try:
            versions = await asyncio.to_thread(self.parts.store.versions, self.target.model)
            staged = [p.version for _, p in versions]
            await self.reporter.report(happening, pointer, message, staged)
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
        try:
            while not stop.is_set():
                await self._until_stopped(self.safe_refresh("poll"), stop)
                await self._sleep(stop)
        finally:
            for task in watchers:
                task.cancel()
            for task in watchers:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await self.flights.stop()
            if self.prefetcher is not None:
                await self.prefetcher.stop()

    @staticmethod
    async def _until_stopped(coro: Coroutine[Any, Any, Outcome], stop: asyncio.Event) -> None:
        """Run ``coro``, cancelling it if ``stop`` is set first (SIGTERM during a resolution)."""
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
        """``refresh`` that never raises (the sidecar never dies on a refresh error)."""
        try:
            return await self.refresh(reason, force=force)
        except Exception as exc:
            self.state.last_error = redact_text(f"{type(exc).__name__}: {exc}")
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
