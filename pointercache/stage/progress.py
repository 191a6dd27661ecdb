"""Progress of a transfer as a log line at most every few seconds, and one line when it ends.

A ``ProgressReporter`` is the ``FetchOptions.progress`` callback: fetchers call it with
(bytes done, bytes total or None), possibly from several threads; it logs ``fetch-progress``
with bytes, percent, rate and ETA no more often than ``every`` seconds, and ``finish()`` logs
``fetch-done`` with the total and the mean rate.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from pointercache.base.log import log
from pointercache.base.redact import redact_uri

if TYPE_CHECKING:
    from collections.abc import Callable


class ProgressReporter:
    """Callable ``(done, total) -> None`` that logs ``fetch-progress`` at most every ``every`` s."""

    def __init__(
        self,
        label: str,
        total: int | None,
        *,
        every: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label = redact_uri(label)
        self.total = total
        self.every = every
        self.done = 0
        self._clock = clock
        self._start = clock()
        self._last_log = self._start
        self._lock = threading.Lock()

    def __call__(self, done: int, total: int | None) -> None:
        """Record progress; log when ``every`` seconds have passed since the last line."""
        with self._lock:
            self.done = done
            if total is not None:
                self.total = total
            now = self._clock()
            if now - self._last_log < self.every:
                return
            self._last_log = now
            fields = self._fields(now)
        log.info("fetch-progress", **fields)

    def _fields(self, now: float) -> dict[str, object]:
        elapsed = max(now - self._start, 1e-9)
        rate = self.done / elapsed
        fields: dict[str, object] = {
            "uri": self.label,
            "bytes": self.done,
            "total": self.total,
            "rate_mib_s": round(rate / (1 << 20), 2),
            "elapsed_s": round(elapsed, 1),
        }
        if self.total:
            fields["percent"] = round(100.0 * self.done / self.total, 1)
            if rate > 0:
                fields["eta_s"] = round(max(self.total - self.done, 0) / rate, 1)
        return fields

    def finish(self, *, ok: bool = True) -> None:
        """Log ``fetch-done`` (or ``fetch-failed`` when ``ok`` is False) with totals and rate."""
        with self._lock:
            fields = self._fields(self._clock())
        fields.pop("eta_s", None)
        if ok:
            log.info("fetch-done", **fields)
        else:
            log.warning("fetch-failed", **fields)


class TransferWatch:
    """The latest progress of one transfer, kept for a one-line reason or ``/status``.

    A ``Progress`` callable like ``ProgressReporter``, but silent: it only remembers (bytes done,
    total, when the count last moved). Fetchers may call it from worker threads; each update is
    a few attribute stores, and readers take a consistent-enough snapshot.
    """

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.started = clock()
        self.last_change = self.started
        self.done = 0
        self.total: int | None = None

    def __call__(self, done: int, total: int | None) -> None:
        """Record progress (the ``FetchOptions.progress`` signature)."""
        if done != self.done:
            self.last_change = self._clock()
        self.done = done
        if total is not None:
            self.total = total

    def to_dict(self) -> dict[str, object]:
        """``bytes``, ``total``, ``percent``, ``rate_bytes_per_s`` (mean), ``idle_s``."""
        now = self._clock()
        rate = self.done / max(now - self.started, 1e-9)
        percent = round(100.0 * self.done / self.total, 1) if self.total else None
        return {
            "bytes": self.done,
            "total": self.total,
            "percent": percent,
            "rate_bytes_per_s": round(rate),
            "idle_s": round(now - self.last_change, 1),
        }

    def summary(self) -> str:
        """One line: "3.0 MiB of 10.0 MiB at 1.2 KiB/s, nothing for 4s" (or "no byte yet")."""
        now = self._clock()
        if not self.done:
            return f"no byte received in {now - self.started:.0f}s"
        total = f" of {_size(self.total)}" if self.total else ""
        rate = _size(int(self.done / max(now - self.started, 1e-9)))
        return f"{_size(self.done)}{total} at {rate}/s, nothing for {now - self.last_change:.0f}s"


_KIB = 1024


def _size(count: int | None) -> str:
    value = float(count or 0)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < _KIB or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= _KIB
    return f"{value:.1f} GiB"  # pragma: no cover - the loop returns
