"""The one bound on a transfer's pace: a minimum rate per window, and a cap derived from its size.

A socket read timeout (aiohttp's ``sock_read``, botocore's ``read_timeout``) ends a transfer that
sends nothing; it cannot end one that sends a byte every few seconds, because every read then
succeeds. A ``Meter`` closes that gap, the same way for every fetcher and source:

- **minimum rate**: the bytes received since the last check must average at least
  ``Pace.min_rate`` bytes per second once ``Pace.window`` seconds have passed (a slow start is
  forgiven for one window; after that each window must keep the pace on its own);
- **total cap**: a transfer of ``size`` bytes may take at most ``window + size / min_rate``
  seconds in all, however it is spread (a server that keeps up the rate in bursts but never
  finishes is still bounded).

``Meter.add`` is called once per chunk as bytes arrive and costs one clock read and two integer
additions; it raises ``pointercache.errors.Stalled`` (a transient ``FetchUnavailable``) naming
what stalled, how far it got and the rate it managed. A transfer that receives nothing at all is
ended by the socket read timeout of its client (``FetchOptions.read_timeout``); ``Meter.check``
lets a waiter apply the same rule when no chunk arrives.

``share`` divides the rate among streams that run in parallel on one link (S3 ranged parts,
MLflow files): each must keep ``min_rate / share``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pointercache.errors import ConfigError, Stalled

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class Pace:
    """How slow a transfer may be before it counts as stalled."""

    min_rate: float = 64 * 1024
    """Bytes per second a transfer must average over each window (64 KiB/s, 0.5 Mbit/s)."""
    window: float = 10.0
    """Seconds over which the rate is measured; also the slack of the total cap."""

    def __post_init__(self) -> None:
        if self.min_rate <= 0 or self.window <= 0:
            raise ConfigError(f"pace {self}: min_rate and window must be positive")

    def cap(self, size: int | None, *, share: int = 1) -> float | None:
        """Seconds a transfer of ``size`` bytes may take in all; None when the size is unknown."""
        if size is None:
            return None
        return self.window + max(size, 0) * max(share, 1) / self.min_rate

    def meter(
        self, what: str, size: int | None = None, *, share: int = 1, clock: Clock = time.monotonic
    ) -> Meter:
        """A meter for one transfer of ``size`` bytes (None: unknown yet, see ``Meter.expect``).

        ``what`` names the transfer in the error (a redacted URI or a file name).
        """
        return Meter(self, what, size, share=share, clock=clock)


@dataclass(slots=True)
class Meter:
    """The running bound of one transfer (see the module docstring). Not thread-safe: one
    stream, one meter."""

    pace: Pace
    what: str
    size: int | None
    share: int = 1
    clock: Clock = time.monotonic
    done: int = 0
    """Bytes counted so far."""
    started: float = field(init=False)
    last_byte: float = field(init=False)
    """Clock time of the last chunk (or of the start)."""
    _window_start: float = field(init=False)
    _window_bytes: int = field(init=False, default=0)
    _deadline: float | None = field(init=False, default=None)
    _next_check: float = field(init=False)

    def __post_init__(self) -> None:
        now = self.clock()
        self.started = self.last_byte = self._window_start = now
        self.expect(self.size)

    @property
    def min_rate(self) -> float:
        """Bytes per second this stream must keep (``Pace.min_rate / share``)."""
        return self.pace.min_rate / max(self.share, 1)

    def expect(self, size: int | None) -> None:
        """Set the size (when a response tells it); the total cap counts from the start."""
        self.size = size
        cap = self.pace.cap(size, share=self.share)
        self._deadline = None if cap is None else self.started + cap
        self._schedule()

    def restart_window(self) -> None:
        """Start a new window now (after a reconnect: the time to reconnect is not a trickle)."""
        self._window_start = self.clock()
        self._window_bytes = 0
        self._schedule()

    def add(self, nbytes: int) -> None:
        """Count ``nbytes`` that just arrived; ``Stalled`` if the pace or the cap is broken."""
        self.done += nbytes
        self._window_bytes += nbytes
        now = self.clock()
        self.last_byte = now
        if now >= self._next_check:
            self._judge(now)

    def check(self) -> None:
        """Apply the rule now, without new bytes (for a waiter whose read timed out)."""
        now = self.clock()
        if now >= self._next_check:
            self._judge(now)

    def seconds_left(self) -> float:
        """Seconds until the next judgement (a bound for the next read); at least 0."""
        return max(0.0, self._next_check - self.clock())

    @property
    def rate(self) -> float:
        """Mean bytes per second since the start."""
        return self.done / max(self.clock() - self.started, 1e-9)

    def _schedule(self) -> None:
        end = self._window_start + self.pace.window
        self._next_check = end if self._deadline is None else min(end, self._deadline)

    def _judge(self, now: float) -> None:
        if self._deadline is not None and now > self._deadline:
            raise Stalled(
                f"{self.what}: not done after {now - self.started:.0f}s, the cap for "
                f"{self.size} bytes ({self.done} received, {_per_second(self.rate)})"
            )
        elapsed = now - self._window_start
        if elapsed >= self.pace.window:
            if self._window_bytes < self.min_rate * elapsed:
                raise Stalled(
                    f"{self.what}: {self._window_bytes} bytes in {elapsed:.0f}s, below the "
                    f"minimum {_per_second(self.min_rate)} ({self.done} of "
                    f"{'?' if self.size is None else self.size} bytes received)"
                )
            self._window_start, self._window_bytes = now, 0
        self._schedule()


def _per_second(rate: float) -> str:
    if rate >= 1 << 20:
        return f"{rate / (1 << 20):.1f} MiB/s"
    if rate >= 1 << 10:
        return f"{rate / (1 << 10):.1f} KiB/s"
    return f"{rate:.1f} B/s"
