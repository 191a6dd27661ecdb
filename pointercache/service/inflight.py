"""The download the sidecar runs in the background, and how a newer answer pre-empts it.

A refresh only *resolves* (a few registry requests, bounded by their timeouts); adopting a new
version — downloading, verifying, installing, flipping — runs as a ``Flight`` in the background,
one at a time. So the refresh loop keeps polling while a large or slow download runs, and:

- a newer registry answer (another version, or the served one again: a rollback) **pre-empts**
  the flight while it is still downloading — the task is cancelled, its staging removed;
- once a flight is installing and flipping (local, short, never abandoned half-way) a newer
  answer waits for it to end, then is applied;
- ``/status`` shows the flight: version, trigger, phase, bytes, total, rate, seconds without a
  byte.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from pointercache.base.clock import utcnow
from pointercache.base.log import log
from pointercache.model.candidate import Candidate
from pointercache.resolve.chain import Resolution
from pointercache.stage.progress import TransferWatch


class Phase(enum.StrEnum):
    """Where a flight is."""

    DOWNLOADING = "downloading"
    """Fetching and verifying into staging: may be pre-empted."""
    INSTALLING = "installing"
    """Installing and flipping: runs to its end."""


@dataclass
class Flight:
    """One adoption in the background."""

    resolution: Resolution
    trigger: str
    """What started it: ``poll``, ``watch`` or ``forced``."""
    started: float = field(default_factory=time.monotonic)
    """Monotonic time of the refresh that started it (the refresh's duration ends with it)."""
    started_at: str = field(default_factory=utcnow)
    watch: TransferWatch = field(default_factory=TransferWatch)
    phase: Phase = Phase.DOWNLOADING
    preempted_by: str | None = None
    """Why it was cancelled, once it was."""
    task: asyncio.Task[Any] | None = None

    @property
    def candidate(self) -> Candidate:
        """What it adopts."""
        return self.resolution.candidate

    def to_dict(self) -> dict[str, Any]:
        """The ``/status`` form."""
        cand = self.candidate
        return {
            "version": cand.version,
            "revision": cand.revision,
            "digest": cand.digest,
            "registry": self.resolution.detail,
            "trigger": self.trigger,
            "phase": self.phase.value,
            "started_at": self.started_at,
            "elapsed_s": round(time.monotonic() - self.started, 1),
            **self.watch.to_dict(),
        }


class Flights:
    """The one slot for a background adoption (see the module docstring)."""

    def __init__(self) -> None:
        self.current: Flight | None = None

    def start(
        self,
        resolution: Resolution,
        trigger: str,
        run: Callable[[Flight], Coroutine[Any, Any, Any]],
        *,
        started: float | None = None,
    ) -> Flight:
        """Start ``run(flight)`` as the flight of ``resolution``; the slot must be free."""
        assert self.current is None or self.current.task is None or self.current.task.done()
        flight = Flight(resolution, trigger)
        if started is not None:
            flight.started = started
        flight.task = asyncio.create_task(run(flight), name=f"adopt {resolution.candidate.version}")
        flight.task.add_done_callback(lambda _task: self._landed(flight))
        self.current = flight
        return flight

    def _landed(self, flight: Flight) -> None:
        if self.current is flight:
            self.current = None

    async def preempt(self, why: str) -> Flight | None:
        """Cancel the flight if it is downloading, or wait for it if it is installing.

        Returns the pre-empted flight (None if there was none, or it had landed).
        """
        flight = self.current
        if flight is None or flight.task is None or flight.task.done():
            return None
        if flight.phase is Phase.INSTALLING:
            await asyncio.wait({flight.task})
            return None
        flight.preempted_by = why
        flight.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await flight.task
        log.info(
            "preempted",
            version=flight.candidate.version,
            reason=why,
            got=flight.watch.to_dict()["bytes"],
        )
        return flight

    async def stop(self) -> None:
        """Cancel the flight whatever its phase (the process is stopping)."""
        flight = self.current
        if flight is not None and flight.task is not None and not flight.task.done():
            flight.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await flight.task
