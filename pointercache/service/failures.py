"""Versions that failed to download or verify, held off with exponential backoff.

Without a memory of failures, a registry that names a version whose digest never matches (or
whose store trickles) makes the sidecar download it again on every poll. ``FailedVersions``
remembers each failed candidate — by version, digest and redacted URI, so a re-upload under the
same version is a new candidate — and holds it off for ``Backoff.cooldown(failures)`` seconds
(``adapters.retry``: equal jitter, from ``initial`` doubling to ``maximum``). ``POST /refresh``
bypasses the hold (an operator asks for it explicitly); a success forgets the failures. At most
``KEEP`` candidates are remembered. ``/status`` lists them with the time of the next attempt.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pointercache.adapters.retry import Backoff
from pointercache.base.clock import utc_after
from pointercache.base.redact import redact_uri
from pointercache.model.candidate import Candidate

KEEP = 16
"""Failed candidates remembered, at most (the oldest is forgotten first)."""
DEFAULT_BACKOFF = Backoff(attempts=1, initial=15.0, maximum=900.0)
"""15 s after the first failure, doubling to 15 min (``attempts`` is not used here)."""

Key = tuple[str, str, str, str]


@dataclass
class Failure:
    """One candidate that failed, and when it may be tried again."""

    version: str
    digest: str | None
    uri: str
    """Redacted."""
    failures: int
    last_error: str
    retry_at: float
    """``time.monotonic()`` of the next attempt."""

    def to_dict(self, now: float) -> dict[str, Any]:
        """The ``/status`` form."""
        wait = max(0.0, self.retry_at - now)
        return {
            "version": self.version,
            "digest": self.digest,
            "failures": self.failures,
            "last_error": self.last_error,
            "retry_in_s": round(wait, 1),
            "retry_at": utc_after(wait),
        }


class FailedVersions:
    """Failed candidates and their hold-off (see the module docstring)."""

    def __init__(
        self, backoff: Backoff = DEFAULT_BACKOFF, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.backoff = backoff
        self._clock = clock
        self._failed: OrderedDict[Key, Failure] = OrderedDict()

    @staticmethod
    def _key(candidate: Candidate) -> Key:
        return (
            candidate.model,
            candidate.version,
            candidate.digest or "",
            redact_uri(candidate.uri),
        )

    def failed(self, candidate: Candidate, error: str) -> Failure:
        """Record one more failure of ``candidate``; return its record (with the next try)."""
        key = self._key(candidate)
        previous = self._failed.pop(key, None)
        count = 1 if previous is None else previous.failures + 1
        entry = Failure(
            version=candidate.version,
            digest=candidate.digest,
            uri=redact_uri(candidate.uri),
            failures=count,
            last_error=error,
            retry_at=self._clock() + self.backoff.cooldown(count),
        )
        self._failed[key] = entry
        while len(self._failed) > KEEP:
            self._failed.popitem(last=False)
        return entry

    def holding(self, candidate: Candidate) -> Failure | None:
        """The failure that holds ``candidate`` off now, or None if it may be tried."""
        entry = self._failed.get(self._key(candidate))
        if entry is None or self._clock() >= entry.retry_at:
            return None
        return entry

    def forget(self, candidate: Candidate) -> None:
        """``candidate`` succeeded: its failures no longer count."""
        self._failed.pop(self._key(candidate), None)

    def to_list(self) -> list[dict[str, Any]]:
        """Every remembered failure, newest first (``/status``)."""
        now = self._clock()
        return [entry.to_dict(now) for entry in reversed(self._failed.values())]
