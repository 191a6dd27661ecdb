"""The sidecar's refresh loop: poll (jittered) and watch the registries, flip when they move.

A refresh only resolves (the registries, each within its timeout) and decides; it never waits for
a download. A new version is adopted in the background as a flight (``service.inflight``): the
loop keeps polling meanwhile, a newer answer (or the served version named again: a rollback)
pre-empts a download, ``POST /refresh`` answers at once, and ``/status`` shows the download's
progress. A version that failed to download or verify is held off with exponential backoff
(``service.failures``) instead of being fetched again on every poll.

A refresh never raises: every failure is recorded in ``RefreshState`` (shown by ``/status``) and
the last good version keeps being served. Revisions are claims of one registry
(``model.revision``): an answer below the revision the same registry claimed for the served
version — or for the version being downloaded — (a lagging replica, a stale CDN edge) is refused
— visibly: ``/status.refused``, a warning, an Event, ``pointercache_refreshes_total{outcome=
"stale"}`` — until that registry has kept giving it for ``stale_grace`` seconds; then it is
accepted (``revision-reset``). Changes of the volume (a flip, a confirmation, a prefetched
install, a collection after a reload) happen one at a time. After each flip the model container
is asked to reload (``service.loaded``).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from functools import partial
from typing import Any

from pointercache.adapters.retry import Backoff
from pointercache.base.clock import utcnow
from pointercache.base.log import log
from pointercache.base.redact import redact_text
from pointercache.errors import PointercacheError, SignatureMismatch
from pointercache.model.candidate import Candidate, Selector
from pointercache.model.pointer import Pointer
from pointercache.model.revision import Claim, is_rollback, is_stale, same_candidate, same_version
from pointercache.resolve.chain import Attempt, Resolution
from pointercache.resolve.sources import CachingSource, WatchableSource
from pointercache.service.failures import DEFAULT_BACKOFF, FailedVersions
from pointercache.service.inflight import Flight, Flights, Phase
from pointercache.service.loaded import LoadOptions, LoadTracker
from pointercache.service.prefetch import Prefetcher
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
        self.loads = LoadTracker(parts.store, self.target.model, loads, telemetry=self.telemetry)
        """What the model container has loaded, and the reload after each flip."""
        self.loads.notify, self.loads.collect = self._loads_happened, self.collect
        self.publisher.holds.append(self.loads.protected)

    async def load_current(self) -> None:
        """Read what the init container (or an earlier run) published, its claim and the
        load saved before a restart (off the event loop)."""
        try:
            self.state.current = await asyncio.to_thread(self.parts.store.current)
        except PointercacheError as exc:
            self.state.last_error = f"current pointer unreadable: {exc}"
            log.error("current-unreadable", error=exc)
        current = self.state.current
        self.state.claim = await asyncio.to_thread(held_claim, self.parts.store, current)
        if current is not None and current.source != "registry":
            self.state.fallback_reason = current.source_detail
        await asyncio.to_thread(self.loads.restore, current)

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
            return self._no_answer(attempts)
        self.state.contacted()
        outcome = await self._apply(resolution, reason, force=force, started=started)
        if self.prefetcher is not None:
            await self.prefetcher.after_refresh()
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

    async def _apply(
        self, resolution: Resolution, reason: str, *, force: bool, started: float
    ) -> Outcome:
        cand = resolution.candidate
        offered = resolution.claim or Claim.of(cand)
        early = await self._against_flight(resolution, offered)
        if early is not None:
            return early
        current = self.state.current
        if current is not None and same_version(current, cand):
            return await self._confirm(current, offered)
        blocked = self.state.blocked
        if blocked and (blocked.version, blocked.revision) == (cand.version, cand.revision):
            return Outcome.BLOCKED  # already refused and reported; wait for the registry to move
        verdict = judge(self.state, resolution, offered, self.options.stale_grace)
        if verdict is Verdict.REFUSE_NEW:
            refused = self.state.refused
            assert refused is not None  # judge records what it refuses
            self.state.record(Happening.STALE_ANSWER, **refused.to_dict())
            await self._report(Happening.STALE_ANSWER, None, refused_message(refused))
        if verdict in (Verdict.REFUSE_NEW, Verdict.REFUSE):
            return Outcome.STALE
        held = None if force else self.failures.holding(cand)
        if held is not None:
            log.debug("held-off", version=cand.version, failures=held.failures)
            return Outcome.FAILED
        reset = verdict is Verdict.RESET
        self.flights.start(resolution, reason, partial(self._fly, reset=reset), started=started)
        return Outcome.IN_PROGRESS

    async def _against_flight(self, resolution: Resolution, offered: Claim) -> Outcome | None:
        """Weigh an answer against the download in flight: the same candidate goes on; an
        answer below the claim of the same registry behind it is stale; any other pre-empts it
        (then None: decide as usual)."""
        cand = resolution.candidate
        flight = self.flights.current
        if flight is None:
            return None
        if same_candidate(flight.candidate, cand):
            return Outcome.IN_PROGRESS  # already on its way
        flying = flight.resolution.claim
        if is_stale(offered, flying):
            assert flying is not None  # is_stale is False without a claim
            self.state.record(
                Happening.STALE_ANSWER,
                version=cand.version,
                revision=cand.revision,
                downloading_revision=flying.revision,
                registry=resolution.detail,
            )
            return Outcome.STALE
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

    async def _confirm(self, current: Pointer, offered: Claim) -> Outcome:
        self.state.confirm_served()  # the registry's answer is the confirmation, not our write
        async with self._volume:
            confirmed, claim = await self.publisher.confirm(current, self.state.claim, offered)
        if confirmed is not current:
            message = f"registry confirms {confirmed.version}"
            await self._report(Happening.CONFIRMED, confirmed, message)
        self.state.current, self.state.claim = confirmed, claim
        self.state.fallback_reason = None
        self.state.blocked = None
        self.state.refused = None
        self.state.last_error = None
        return Outcome.UNCHANGED

    async def _fly(self, flight: Flight, *, reset: bool = False) -> Outcome:
        """Adopt ``flight``'s candidate: download (pre-emptible), then install and flip.

        ``reset``: the answer is below the claim held, accepted after the grace period.
        """
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
            outcome = await self._flipped(adopted, flight, reset=reset)
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

    async def _flipped(self, adopted: Adopted, flight: Flight, *, reset: bool) -> Outcome:
        pointer = adopted.pointer
        resolution = flight.resolution
        previous = self.state.current
        held = self.state.claim
        served_before = self.state.served_before()
        self.failures.forget(flight.candidate)
        self.state.current, self.state.claim = pointer, resolution.claim
        self.state.confirm_served()
        self.state.fallback_reason = None
        self.state.blocked = None
        self.state.refused = None
        self.state.last_error = None
        self.state.lkg_error = "; ".join(adopted.warnings) or None
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
            trigger=flight.trigger,
        )
        self.loads.flipped(previous, pointer)
        if not reset:
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
        self.state.claim = await asyncio.to_thread(held_claim, self.parts.store, pointer)
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
        self.loads.flipped(None, pointer)
        happening = Happening.FLIPPED if pointer.source == "registry" else Happening.FALLBACK
        message = f"now serving {pointer.version} from {pointer.source}"
        await self._report(happening, pointer, message)
        return Outcome.FLIPPED

    async def collect(self) -> None:
        """Garbage-collect the volume now, between changes of it (a reload ended)."""
        async with self._volume:
            await asyncio.to_thread(self.publisher.collect, self.state.current)
        self.view.invalidate()

    async def _loads_happened(self, happening: Happening, message: str, fields: Any) -> None:
        self.state.record(happening, **fields)
        await self._report(happening, self.state.current, message)

    async def _report(self, happening: Happening, pointer: Pointer | None, message: str) -> None:
        if self.reporter is None:
            return
        try:
            versions = await asyncio.to_thread(self.parts.store.versions, self.target.model)
            staged = [p.version for _, p in versions]
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
        """``refresh`` that never raises: an unexpected error is recorded (``Outcome.ERROR``)."""
        try:
            return await self.refresh(reason, force=force)
        except Exception as exc:  # the sidecar never dies on a refresh error
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
