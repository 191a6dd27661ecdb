"""The sidecar's refresh loop: poll (jittered) and watch the registries, flip when they move.

A refresh never raises: every failure is recorded in ``RefreshState`` (shown by ``/status``) and
the last good version keeps being served. Revisions only move forward: an answer with a lower
revision than the one served (a lagging replica, a stale CDN edge) is refused and recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pointercache.base.clock import parse_time, utcnow
from pointercache.base.log import log
from pointercache.errors import PointercacheError, SignatureMismatch
from pointercache.model.pointer import Pointer
from pointercache.resolve.chain import Resolution
from pointercache.resolve.sources import CachingSource, WatchableSource
from pointercache.service.reporting import Reporter
from pointercache.service.telemetry import Telemetry
from pointercache.sync.pipeline import Publisher
from pointercache.sync.wiring import Parts

HISTORY = 50


@dataclass
class RefreshState:
    """What the sidecar knows; read by the status server, written by the loop only."""

    current: Pointer | None = None
    last_contact: str | None = None
    confirmed_monotonic: float | None = None
    """When a registry last named the served version (in this process); see ``staleness``."""
    last_error: str | None = None
    last_refresh: str | None = None
    fallback_reason: str | None = None
    blocked: dict[str, Any] | None = None
    prefetched: Pointer | None = None
    history: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=HISTORY))

    def record(self, event: str, **fields: Any) -> None:
        """Append an entry to the recent history (and log it)."""
        entry = {"ts": utcnow(), "event": event, **fields}
        self.history.appendleft(entry)
        log.info(event, **fields)

    def confirm_served(self) -> None:
        """A registry has just named the version being served."""
        self.confirmed_monotonic = time.monotonic()

    def staleness(self) -> float | None:
        """Seconds since a registry last confirmed the served version; None if never known.

        An answer that is refused (an older revision, a blocked or failed flip) or names another
        version is contact, not confirmation. Before this process saw a confirmation, the
        served pointer's ``registry_seen_at`` (written by the init container or an LKG) counts.
        """
        if self.current is None:
            return None
        if self.confirmed_monotonic is not None:
            return time.monotonic() - self.confirmed_monotonic
        seen = parse_time(self.current.registry_seen_at)
        if seen is None:
            return None
        return max(0.0, (datetime.now(UTC) - seen).total_seconds())


class Refresher:
    """Keeps the published version in step with the registries."""

    def __init__(
        self,
        parts: Parts,
        telemetry: Telemetry | None = None,
        reporter: Reporter | None = None,
    ) -> None:
        self.parts = parts
        self.settings = parts.settings
        self.state = RefreshState()
        self.telemetry = telemetry or Telemetry()
        self.reporter = reporter
        self.publisher = Publisher.for_parts(parts)
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self.telemetry.bind(self.state)

    def load_current(self) -> None:
        """Read what the init container (or an earlier run) published."""
        try:
            self.state.current = self.parts.store.current()
        except PointercacheError as exc:
            self.state.last_error = f"current pointer unreadable: {exc}"
            log.error("current-unreadable", error=exc)
        if self.state.current is not None and self.state.current.source != "registry":
            self.state.fallback_reason = self.state.current.source_detail

    def trigger(self) -> None:
        """Ask the loop to refresh now (watch event or ``POST /refresh``)."""
        self._wake.set()

    async def refresh(self, reason: str = "poll", *, force: bool = False) -> str:
        """Resolve from the registries and flip if they moved; return the outcome."""
        async with self._lock:
            started = time.monotonic()
            outcome = await self._refresh(reason, force=force)
            self.state.last_refresh = utcnow()
            self.telemetry.refreshed(outcome, time.monotonic() - started)
            return outcome

    async def _refresh(self, reason: str, *, force: bool) -> str:
        settings = self.settings
        if force:
            for source in self.parts.sources:
                if isinstance(source, CachingSource):
                    source.invalidate()
        if self.state.current is None:
            return await self._bootstrap()
        resolution, attempts = await self.parts.chain.from_registries(
            settings.model, settings.parsed_selector
        )
        if resolution is None:
            summary = "; ".join(f"{a.name}: {a.reason}" for a in attempts) or "no registry"
            if self.state.last_error != summary:
                self.state.record("registry-unavailable", reason=summary)
            self.state.last_error = summary
            return "unavailable"
        self.state.last_contact = utcnow()
        self.state.last_error = None
        outcome = await self._apply(resolution, reason)
        if settings.prefetch_selector:
            await self._prefetch()
        return outcome

    async def _apply(self, resolution: Resolution, reason: str) -> str:
        cand = resolution.candidate
        current = self.state.current
        if current is not None and _same(current, resolution):
            confirmed = await self.publisher.confirm(current, resolution.detail, cand.revision)
            if confirmed is not current:
                await self._report("confirmed", confirmed, f"registry confirms {cand.version}")
            self.state.current = confirmed
            self.state.confirm_served()
            self.state.fallback_reason = None
            self.state.blocked = None
            return "unchanged"
        blocked = self.state.blocked
        if blocked and (blocked["version"], blocked["revision"]) == (cand.version, cand.revision):
            return "blocked"  # already refused and reported; wait for the registry to move
        if current is not None and cand.revision < current.revision:
            self.state.record(
                "stale-answer",
                version=cand.version,
                revision=cand.revision,
                served_revision=current.revision,
                registry=resolution.detail,
            )
            return "stale"
        return await self._flip(resolution, reason)

    async def _flip(self, resolution: Resolution, reason: str) -> str:
        cand = resolution.candidate
        previous = self.state.current
        try:
            adopted = await self.publisher.adopt(resolution)
        except SignatureMismatch as exc:
            self.state.blocked = {
                "version": cand.version,
                "revision": cand.revision,
                "reason": str(exc),
                "diff": exc.diff,
            }
            self.state.record("flip-blocked", version=cand.version, reason=str(exc), diff=exc.diff)
            self.telemetry.blocked()
            await self._report("blocked", None, f"version {cand.version} blocked: {exc}")
            return "blocked"
        except PointercacheError as exc:
            self.state.last_error = f"version {cand.version}: {type(exc).__name__}: {exc}"
            self.state.record("flip-failed", version=cand.version, error=exc)
            return "failed"
        self.state.current = adopted.pointer
        self.state.confirm_served()
        self.state.fallback_reason = None
        self.state.blocked = None
        event = (
            "rollback"
            if previous is not None and _is_rollback(previous, adopted.pointer, self.state)
            else "flipped"
        )
        self.state.record(
            event,
            version=adopted.pointer.version,
            revision=adopted.pointer.revision,
            previous=previous.version if previous else None,
            trigger=reason,
        )
        await self._report(event, adopted.pointer, f"now serving {adopted.pointer.version}")
        return event

    async def _bootstrap(self) -> str:
        """Nothing is published yet: walk the whole chain, as the init container does."""
        from pointercache.sync.bootstrap import resolve_and_publish

        try:
            pointer = await resolve_and_publish(self.parts)
        except PointercacheError as exc:
            if self.state.last_error != str(exc):
                self.state.record("bootstrap-failed", reason=str(exc))
            self.state.last_error = str(exc)
            return "unavailable"
        self.state.current = pointer
        if pointer.source == "registry":
            self.state.last_contact = utcnow()
            self.state.confirm_served()
        else:
            self.state.fallback_reason = pointer.source_detail
            self.telemetry.fallback(pointer.source)
        self.state.record(
            "flipped",
            version=pointer.version,
            source=pointer.source,
            revision=pointer.revision,
            previous=None,
            trigger="bootstrap",
        )
        event = "flipped" if pointer.source == "registry" else "fallback"
        await self._report(event, pointer, f"now serving {pointer.version} from {pointer.source}")
        return "flipped"

    async def _prefetch(self) -> None:
        settings = self.settings
        assert settings.prefetch_selector
        from pointercache.model.candidate import Selector

        selector = Selector.parse(settings.prefetch_selector)
        resolution, _ = await self.parts.chain.from_registries(settings.model, selector)
        if resolution is None or (
            self.state.prefetched and _same(self.state.prefetched, resolution)
        ):
            return
        try:
            adopted = await self.publisher.install(resolution)
        except PointercacheError as exc:
            self.state.record("prefetch-failed", version=resolution.candidate.version, error=exc)
            return
        self.state.prefetched = adopted.pointer
        self.publisher.protect = {adopted.pointer.digest}
        self.state.record("prefetched", version=adopted.pointer.version)

    async def _report(self, event: str, pointer: Pointer | None, message: str) -> None:
        if self.reporter is None:
            return
        try:
            staged = [p.version for _, p in self.parts.store.versions(self.settings.model)]
            await self.reporter.report(event, pointer, message, staged)
        except Exception as exc:
            log.warning("report-failed", event_name=event, error=exc)

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
            await self._report("fallback" if fell_back else "started", current, message)
        try:
            while not stop.is_set():
                await self._until_stopped(self._safe_refresh("poll"), stop)
                await self._sleep(stop)
        finally:
            for task in watchers:
                task.cancel()
            for task in watchers:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    @staticmethod
    async def _until_stopped(coro: Coroutine[Any, Any, str], stop: asyncio.Event) -> None:
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

    async def _safe_refresh(self, reason: str, *, force: bool = False) -> str:
        try:
            return await self.refresh(reason, force=force)
        except Exception as exc:  # the sidecar never dies on a refresh error
            self.state.last_error = f"{type(exc).__name__}: {exc}"
            log.error("refresh-crashed", error=exc)
            return "error"

    async def _sleep(self, stop: asyncio.Event) -> None:
        base = self.settings.poll_interval
        delay = base * (1 + random.random() * self.settings.poll_jitter)  # noqa: S311
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
                    await self._safe_refresh("watch")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("watch-failed", error=exc)
            await asyncio.sleep(1.0)


def _same(pointer: Pointer, resolution: Resolution) -> bool:
    cand = resolution.candidate
    if cand.model != pointer.model or cand.version != pointer.version:
        return False
    if cand.digest is not None:
        return cand.digest == pointer.digest
    from pointercache.base.redact import redact_uri

    return redact_uri(cand.uri) == pointer.uri


def _is_rollback(previous: Pointer, new: Pointer, state: RefreshState) -> bool:
    """A move back to a version served earlier, or to a numerically lower version."""
    if previous.version.isdigit() and new.version.isdigit():
        return int(new.version) < int(previous.version)
    return any(
        h.get("event") in {"flipped", "rollback"} and h.get("version") == new.version
        for h in state.history
    )
