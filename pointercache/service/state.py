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
from pointercache.model.revision import Claim

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
    """The registry answered below the revision it claimed for the served version; refused
    (until the grace period ends)."""
    BLOCKED = "blocked"
    """The signature gate refused the candidate."""
    FAILED = "failed"
    """The candidate could not be staged or verified; the current version stays."""
    UNAVAILABLE = "unavailable"
    """No registry answered (or, before the first publication, no step of the chain)."""
    NOT_FOUND = "not-found"
    """A registry answered that the model, alias, version or stage does not exist (and none
    answered with a version); the current version stays."""
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
    REVISION_RESET = "revision-reset"
    REGISTRY_UNAVAILABLE = "registry-unavailable"
    SELECTOR_NOT_FOUND = "selector-not-found"
    BOOTSTRAP_FAILED = "bootstrap-failed"
    PREFETCHED = "prefetched"
    PREFETCH_FAILED = "prefetch-failed"
    DOWNLOADING = "downloading"
    PREEMPTED = "preempted"
    HELD_OFF = "held-off"
    LOADED = "loaded"
    """The model container has loaded a version (acknowledged, hook or probe)."""
    RELOAD_FAILED = "reload-failed"
    """The reload after a flip was refused or did not finish within --on-flip-timeout."""


WARNINGS = frozenset(
    {
        Happening.BLOCKED,
        Happening.FLIP_FAILED,
        Happening.STALE_ANSWER,
        Happening.REVISION_RESET,
        Happening.REGISTRY_UNAVAILABLE,
        Happening.SELECTOR_NOT_FOUND,
        Happening.BOOTSTRAP_FAILED,
        Happening.PREFETCH_FAILED,
        Happening.FALLBACK,
        Happening.RELOAD_FAILED,
    }
)
"""Happenings logged at warning level: an answer refused, a version not served, no answer."""


@dataclass(frozen=True, slots=True)
class RefusedAnswer:
    """A registry answer refused as stale, and since when (``/status.refused``)."""

    registry: str
    version: str
    revision: int
    served_revision: int
    """The revision of the claim it was refused against (same registry)."""
    since: str
    """When it was first refused (RFC 3339)."""
    since_monotonic: float
    """The same, on this process's monotonic clock (the grace period is measured on it)."""
    grace: float
    """Seconds the registry must keep giving it before it is accepted."""

    def same_answer(self, registry: str, version: str, revision: int) -> bool:
        """True if (``registry``, ``version``, ``revision``) is the answer refused here."""
        return (self.registry, self.version, self.revision) == (registry, version, revision)

    def refused_for(self) -> float:
        """Seconds since it was first refused."""
        return time.monotonic() - self.since_monotonic

    def to_dict(self) -> dict[str, Any]:
        """The ``/status`` form."""
        left = max(0.0, self.grace - self.refused_for())
        return {
            "registry": self.registry,
            "version": self.version,
            "revision": self.revision,
            "served_revision": self.served_revision,
            "since": self.since,
            "accepted_in_seconds": round(left, 3),
        }


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
    claim: Claim | None = None
    """The registry claim held against answers for the served version (``model.revision``);
    None when it came from the node LKG or the pinned version, or its registry has no counter."""
    refused: RefusedAnswer | None = None
    """The answer currently refused as stale, while the registry keeps giving it."""
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
        """Append an entry to the recent history and log it (``WARNINGS`` at warning level)."""
        entry = {"ts": utcnow(), "event": happening.value, **fields}
        self.history.appendleft(entry)
        if happening in WARNINGS:
            log.warning(happening.value, **fields)
        else:
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
