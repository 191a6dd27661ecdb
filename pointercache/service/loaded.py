"""What the model container has loaded: acknowledgements, reloads after a flip, and their rules.

The rules, in one place:

- **An acknowledgement names a version staged on the volume.** ``POST /loaded`` (and so the
  reader library and ``pointercache loaded``) must name a version *and* digest installed under
  ``versions/``; anything else is ``NotStaged`` (HTTP 409) with the staged versions listed. An
  acknowledgement of an older staged version is accepted: it is the truth (the model container
  still serves it).
- **Tracking starts when there is something to track**: a hook or probe is configured,
  ``--ready-when loaded`` is set, or the model container has acknowledged a load. Before that,
  loads are not reported, nothing is protected and nothing is given up, as before this existed.
- **Every flip starts a reload**: the hooks, then the probe (``service.hooks``), or else a wait
  for the acknowledgement, bounded by ``--on-flip-timeout``. When the time runs out or a hook
  refuses, the reload has *failed*: an error in ``/status``, ``pointercache_reload_failures_total``
  and a ``ReloadFailed`` Event. A probe keeps being polled every ``LATE_PROBE_SECONDS`` after
  that, so a load that only took longer is still seen.
- **What the model container serves stays on the volume while a reload is pending**:
  ``protected`` names its digest (the loaded one; if none was reported, the one published before
  the flip) to garbage collection until the new version is loaded or the reload has failed.
- **The last load survives a sidecar restart** (``.state/loaded.json`` on the pod's volume), if
  its version is still staged, so a restarted sidecar does not turn a ready pod unready.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pointercache.base.clock import utcnow
from pointercache.base.log import log
from pointercache.base.redact import redact_text
from pointercache.errors import LoadError, NotStaged, PointercacheError
from pointercache.model.loaded import MAX_MARK_BYTES, Ack, Loaded, ReadyWhen, UrlTemplate, Via
from pointercache.model.pointer import Pointer
from pointercache.service.hooks import Change, ReloadHooks
from pointercache.service.state import Happening
from pointercache.service.telemetry import Telemetry
from pointercache.volume import layout
from pointercache.volume.store import Store

LATE_PROBE_SECONDS = 5.0
"""Seconds between probes once a reload has failed (a late load still counts)."""

Notify = Callable[[Happening, str, dict[str, Any]], Awaitable[None]]
"""Record a happening: history, log line, annotations and Event (the refresher's)."""
Collect = Callable[[], Awaitable[None]]
"""Run garbage collection now (the refresher's, under its lock)."""


@dataclass(frozen=True, slots=True)
class LoadOptions:
    """How the sidecar learns what the model container has loaded."""

    on_flip: tuple[UrlTemplate, ...] = ()
    """Reload hooks, POSTed in order after each flip (``--on-flip-url``)."""
    probe: UrlTemplate | None = None
    """Polled after each flip until it answers 2xx (``--loaded-probe-url``)."""
    timeout: float = 120.0
    """Seconds a reload may take before it has failed (``--on-flip-timeout``)."""
    ready_when: ReadyWhen = "published"
    """``/readyz``: once a model is published, or once the model container has loaded one."""


class ReloadState(enum.StrEnum):
    """Where the reload after a flip stands."""

    PENDING = "pending"
    LOADED = "loaded"
    FAILED = "failed"


@dataclass
class Reload:
    """The reload after one flip."""

    version: str
    digest: str
    previous: str | None
    """The version published before the flip."""
    started_at: str
    started: float
    """``time.monotonic()`` at the flip."""
    state: ReloadState = ReloadState.PENDING
    error: str | None = None
    seconds: float | None = None
    """Flip to loaded, once loaded."""

    def to_dict(self) -> dict[str, Any]:
        """The ``/status`` form."""
        return {
            "version": self.version,
            "digest": self.digest,
            "previous": self.previous,
            "state": self.state.value,
            "started_at": self.started_at,
            "error": self.error,
            "flip_to_loaded_seconds": None if self.seconds is None else round(self.seconds, 3),
        }


class LoadTracker:
    """Knows what the model container serves; runs the reload after each flip."""

    def __init__(
        self,
        store: Store,
        model: str,
        options: LoadOptions | None = None,
        *,
        telemetry: Telemetry | None = None,
        hooks: ReloadHooks | None = None,
    ) -> None:
        self.store = store
        self.model = model
        self.options = options or LoadOptions()
        self.telemetry = telemetry or Telemetry()
        self.hooks = hooks or ReloadHooks(
            self.options.on_flip, self.options.probe, timeout=self.options.timeout
        )
        self.loaded: Loaded | None = None
        self.reload: Reload | None = None
        self.current: Pointer | None = None
        self.tracking = self.hooks.configured or self.options.ready_when == "loaded"
        self.notify: Notify | None = None
        self.collect: Collect | None = None
        self._task: asyncio.Task[None] | None = None
        self._gc: asyncio.Task[None] | None = None
        self.telemetry.bind_loads(self)

    @property
    def ready(self) -> bool:
        """``/readyz`` in ``loaded`` mode: the model container has loaded a staged version."""
        return self.loaded is not None

    def protected(self) -> set[str]:
        """Digests garbage collection must keep: what the model container serves meanwhile."""
        if not self.tracking or (self.reload and self.reload.state is ReloadState.FAILED):
            return set()
        serving = self.loaded or self.current
        return {serving.digest} if serving is not None else set()

    def restore(self, current: Pointer | None) -> None:
        """Read the load saved before a restart (kept only if its version is still staged)."""
        self.current = current
        try:
            data = self.store.read_state(layout.LOADED, MAX_MARK_BYTES)
            if data is None:
                return
            mark = Loaded.parse(data)
            if (mark.version, mark.digest) in self._staged():
                self.loaded, self.tracking = mark, True
        except (OSError, PointercacheError) as exc:
            log.warning("loaded-state-unreadable", error=exc)

    def started(self) -> None:
        """The service starts: probe the current version, or resume an interrupted reload."""
        current = self.current
        if current is None or not self.tracking:
            return
        if self.loaded is not None and self.loaded.digest == current.digest:
            return
        resume = self.loaded is not None and bool(self.hooks.on_flip)
        if resume or self.hooks.probe is not None:
            self._start(Change(current, self._path(current)), hooks=resume)

    def flipped(self, previous: Pointer | None, pointer: Pointer) -> None:
        """``pointer`` was just published: start its reload (cancelling an unfinished one)."""
        self.current = pointer
        if not self.tracking:
            return
        path = self._path(previous) if previous else None
        change = Change(pointer, self._path(pointer), previous, path)
        self._start(change, hooks=True, previous=previous.version if previous else None)

    async def acknowledge(self, ack: Ack) -> Loaded:
        """Accept the model container's acknowledgement, or raise ``NotStaged`` saying why."""
        if ack.model is not None and ack.model != self.model:
            raise NotStaged(
                f"model {ack.model!r} is not served here (this sidecar: {self.model!r})"
            )
        staged = await asyncio.to_thread(self._staged)
        if (ack.version, ack.digest) not in staged:
            listing = ", ".join(f"{v} ({d[:19]})" for v, d in staged) or "nothing"
            raise NotStaged(
                f"version {ack.version} with digest {ack.digest} is not staged on the volume "
                f"(staged: {listing})"
            )
        self.tracking = True
        return await self._record(ack.version, ack.digest, Via.ACK)

    def status(self) -> dict[str, Any]:
        """``loaded`` and ``reload`` of ``/status``."""
        loaded: dict[str, Any] | None = None
        if self.loaded is not None:
            reload = self.reload
            same = reload is not None and reload.digest == self.loaded.digest
            loaded = self.loaded.to_dict() | {
                "current": self.current is not None and self.current.digest == self.loaded.digest,
                "flip_to_loaded_seconds": reload.to_dict()["flip_to_loaded_seconds"]
                if reload and same
                else None,
            }
        return {"loaded": loaded, "reload": self.reload.to_dict() if self.reload else None}

    async def aclose(self) -> None:
        """Stop a running reload and collection (the service is stopping)."""
        self._stop()
        for task in (self._task, self._gc):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    def _start(self, change: Change, *, hooks: bool, previous: str | None = None) -> None:
        self._stop()
        pointer = change.pointer
        self.reload = Reload(pointer.version, pointer.digest, previous, utcnow(), time.monotonic())
        if not self.hooks.configured and self.loaded and self.loaded.digest == pointer.digest:
            self.reload.state, self.reload.seconds = ReloadState.LOADED, 0.0
            return  # back to the version the model container still serves
        self._task = asyncio.create_task(self._run(self.reload, change, hooks=hooks))

    def _stop(self) -> None:
        task = self._task
        if task is not None and task is not asyncio.current_task() and not task.done():
            task.cancel()

    async def _run(self, reload: Reload, change: Change, *, hooks: bool) -> None:
        timeout = self.options.timeout
        try:
            async with asyncio.timeout(timeout):
                if self.hooks.configured:
                    via = await self.hooks.reload(change, hooks=hooks, seconds=timeout)
                else:
                    await asyncio.Event().wait()  # an acknowledgement ends it (``_record``)
                    return
        except TimeoutError:
            last = f": {self.hooks.last_error}" if self.hooks.last_error else ""
            await self._fail(reload, f"not loaded within {timeout:g}s{last}")
            await self._late(reload, change)
            return
        except LoadError as exc:
            reason = redact_text(str(exc))
            if time.monotonic() - reload.started >= timeout:  # retries ran out of time
                await self._fail(reload, f"not loaded within {timeout:g}s: {reason}")
                await self._late(reload, change)
            else:
                await self._fail(reload, reason)
            return
        await self._record(reload.version, reload.digest, via)

    async def _late(self, reload: Reload, change: Change) -> None:
        """After a failed reload, keep probing slowly: a late load still counts."""
        if self.hooks.probe is None:
            return
        while True:
            await asyncio.sleep(LATE_PROBE_SECONDS)
            with contextlib.suppress(LoadError, TimeoutError):
                async with asyncio.timeout(LATE_PROBE_SECONDS):
                    await self.hooks.reload(change, hooks=False, seconds=LATE_PROBE_SECONDS)
                    break
        await self._record(reload.version, reload.digest, Via.PROBE)

    async def _record(self, version: str, digest: str, via: Via) -> Loaded:
        mark = Loaded(version, digest, via, utcnow())
        self.loaded = mark
        reload = self.reload
        finished = reload is not None and reload.digest == digest and reload.seconds is None
        if finished and reload is not None:
            reload.state, reload.error = ReloadState.LOADED, None
            reload.seconds = time.monotonic() - reload.started
            self.telemetry.loaded(reload.seconds)
            self._stop()
        await asyncio.to_thread(self._save, mark)
        fields: dict[str, Any] = {"version": version, "digest": digest, "via": via.value}
        if finished and reload is not None and reload.seconds is not None:
            fields["flip_to_loaded_seconds"] = round(reload.seconds, 3)
        await self._notify(Happening.LOADED, f"model container loaded {version} ({via})", fields)
        if finished:
            await self._collect()
        return mark

    async def _fail(self, reload: Reload, reason: str) -> None:
        reload.state, reload.error = ReloadState.FAILED, reason
        self.telemetry.reload_failed()
        serving = self.loaded.version if self.loaded else "an unknown version"
        message = f"version {reload.version} not loaded: {reason}; the model serves {serving}"
        fields = {"version": reload.version, "error": reason, "serving": serving}
        await self._notify(Happening.RELOAD_FAILED, message, fields)
        await self._collect()

    async def _notify(self, happening: Happening, message: str, fields: dict[str, Any]) -> None:
        if self.notify is None:
            log.info(happening.value, **fields)
            return
        await self.notify(happening, message, fields)

    async def _collect(self) -> None:
        """Collect in the background: a refresh may hold the store for a long download."""
        if self.collect is None or (self._gc is not None and not self._gc.done()):
            return
        self._gc = asyncio.create_task(self._safe_collect(self.collect))

    @staticmethod
    async def _safe_collect(collect: Collect) -> None:
        try:
            await collect()
        except Exception as exc:  # a failed collection is retried at the next one
            log.warning("gc-failed", error=exc)

    def _save(self, mark: Loaded) -> None:
        try:
            self.store.save_state(layout.LOADED, mark.to_json().encode())
        except PointercacheError as exc:
            log.warning("loaded-state-unsaved", error=exc)

    def _staged(self) -> list[tuple[str, str]]:
        return [(p.version, p.digest) for _, p in self.store.versions(self.model)]

    def _path(self, pointer: Pointer) -> Path:
        return self.store.versions_dir / pointer.model / pointer.short / layout.MODEL
