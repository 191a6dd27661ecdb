"""The sidecar's typed state: what it serves, what happened, and the words it reports them in.

``RefreshState`` has one writer, the refresh loop (``Refresher``); the status server and the
telemetry callbacks only read it. Outcomes and history events are enums (``StrEnum``), so a
typo is a type error and ``/status``, the metrics and the logs use the same words.
"""

from __future__ import annotations

import enum
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pointercache.base.clock import parse_time, utcnow
from pointercache.base.log import log
from pointercache.model.pointer import Pointer

HISTORY = 50
"""Entries kept in the recent history (``/status``)."""


class Outcome(enum.StrEnum):
    """How one refresh ended (``pointercache_refreshes_total{outcome}``)."""

    FLIPPED = "flipped"
    """A new version is served."""
    ROLLBACK = "rollback"
    """A version served earlier (or numerically lower) is served again."""
    UNCHANGED = "unchanged"
    """The registry named what is served."""
    STALE = "stale"
    """The answer's revision is below the served one; refused."""
    BLOCKED = "blocked"
    """The signature gate refused the candidate."""
    FAILED = "failed"
    """The candidate could not be staged or verified; the current version stays."""
    UNAVAILABLE = "unavailable"
    """No registry answered (or, before the first publication, no step of the chain)."""
    ERROR = "error"
    """An unexpected error; recorded, and the current version stays."""
    IN_PROGRESS = "in-progress"
    """A download runs in the background (not counted: its end is counted when it ends)."""


class Happening(enum.StrEnum):
    """What the history (``/status``), the logs and the pod's Events record."""

    STARTED = "started"
    FLIPPED = "flipped"
    ROLLBACK = "rollback"
    CONFIRMED = "confirmed"
    FALLBACK = "fallback"
    BLOCKED = "flip-blocked"
    FLIP_FAILED = "flip-failed"
    STALE_ANSWER = "stale-answer"
    REGISTRY_UNAVAILABLE = "registry-unavailable"
    BOOTSTRAP_FAILED = "bootstrap-failed"
    PREFETCHED = "prefetched"
    PREFETCH_FAILED = "prefetch-failed"
    DOWNLOADING = "downloading"
    PREEMPTED = "preempted"
    HELD_OFF = "held-off"


@dataclass(frozen=True, slots=True)
class BlockedFlip:
    """A version the signature gate refused, reported once until the registry moves."""

    version: str
    revision: int
    reason: str
    diff: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """The ``/status`` form."""
        return {
            "version": self.version,
            "revision": self.revision,
            "reason": self.reason,
            "diff": self.diff,
        }


@dataclass
class RefreshState:
    """What the sidecar knows; written by the refresh loop only."""

    current: Pointer | None = None
    """The served pointer (the volume's ``current``), None before the first publication."""
    last_contact: str | None = None
    """When a registry last answered (RFC 3339)."""
    confirmed_monotonic: float | None = None
    """When a registry last named the served version, on this process's monotonic clock."""
    last_error: str | None = None
    last_refresh: str | None = None
    fallback_reason: str | None = None
    """Why the served version did not come from a registry, while it did not."""
    blocked: BlockedFlip | None = None
    prefetched: Pointer | None = None
    lkg_error: str | None = None
    """Why the last flip could not write the node LKG (a full or locked node disk), if it could
    not."""
    history: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=HISTORY))

    def record(self, happening: Happening, **fields: Any) -> None:
        """Append an entry to the recent history (and log it)."""
        entry = {"ts": utcnow(), "event": happening.value, **fields}
        self.history.appendleft(entry)
        log.info(happening.value, **fields)

    def contacted(self) -> None:
        """A registry answered just now."""
        self.last_contact = utcnow()

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

    def served_before(self) -> list[str]:
        """Versions this process flipped to earlier (for the rollback rule)."""
        kinds = {Happening.FLIPPED.value, Happening.ROLLBACK.value}
        return [h["version"] for h in self.history if h.get("event") in kinds and "version" in h]
