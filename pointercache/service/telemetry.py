"""Metrics through the OpenTelemetry *API*; the sidecar configures the SDK and the exporter.

Few metrics, each named for the question it answers:

- ``pointercache_served_info`` (gauge = 1, attributes model/version/digest/source): what is served?
- ``pointercache_staleness_seconds``: how long since a registry last confirmed it?
- ``pointercache_refresh_duration_seconds`` (histogram): how long does a refresh take?
- ``pointercache_refreshes_total`` (by outcome): flipped, rollback, unchanged, stale, blocked,
  failed, unavailable, not-found.
- ``pointercache_revision_resets_total``: how often was an answer accepted although its registry
  had claimed a higher revision before (after the grace period)?
- ``pointercache_fallbacks_total`` (by source): how often did we serve without a registry?
- ``pointercache_signature_blocks_total``: how often did the signature gate refuse a flip?
- ``pointercache_download_bytes_total`` / ``pointercache_download_seconds``: what did fetching cost?
- ``pointercache_loaded_info`` (gauge = 1, attributes model/version/digest/via): what has the model
  container loaded? Absent until something is known.
- ``pointercache_flip_to_loaded_seconds`` (histogram): how long from a flip to the load?
- ``pointercache_reload_failures_total``: how often did a reload fail or time out?

Durations are in seconds with explicit bucket bounds sized for what they measure (the SDK's
default bounds are meant for milliseconds). Counters start at 0 for every outcome and source, so
``rate()`` and ``increase()`` see the first event too.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

from pointercache.service.state import Outcome

if TYPE_CHECKING:
    from pointercache.service.loaded import LoadTracker
    from pointercache.service.state import RefreshState

REFRESH_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
)
"""Seconds: a poll answered from cache takes milliseconds, a flip includes a download (minutes)."""
DOWNLOAD_BUCKETS = (
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1200.0,
    1800.0,
    3600.0,
)
"""Seconds: from a small model on a near store to tens of GiB across regions."""
LOAD_BUCKETS = (
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
)
"""Seconds: a hot swap of a small model takes milliseconds, loading a large one minutes."""
OUTCOMES = tuple(o.value for o in Outcome if o not in {Outcome.ERROR, Outcome.IN_PROGRESS})
"""Outcomes a refresh is counted with (``error``, a crash inside the refresh, is only logged;
``in-progress`` is counted with the outcome of the download when it ends)."""
FALLBACK_SOURCES = ("lkg-node", "lkg-cluster", "pinned")
"""Steps of the chain other than a registry."""


class Telemetry:
    """The instruments of one process."""

    def __init__(self, meter: metrics.Meter | None = None) -> None:
        self.meter = meter or metrics.get_meter("pointercache")
        self._state: RefreshState | None = None
        self._loads: LoadTracker | None = None
        self._refresh_duration = self.meter.create_histogram(
            "pointercache_refresh_duration_seconds",
            unit="s",
            description="Wall time of one refresh (resolve, and stage and flip when it moved)",
            explicit_bucket_boundaries_advisory=list(REFRESH_BUCKETS),
        )
        self._refreshes = self.meter.create_counter(
            "pointercache_refreshes_total", description="Refreshes by outcome"
        )
        self._fallbacks = self.meter.create_counter(
            "pointercache_fallbacks_total", description="Publications not answered by a registry"
        )
        self._blocks = self.meter.create_counter(
            "pointercache_signature_blocks_total",
            description="Flips refused because the model's signature does not fit the code",
        )
        self._resets = self.meter.create_counter(
            "pointercache_revision_resets_total",
            description="Answers accepted after the grace period although the same registry had"
            " claimed a higher revision for the served version",
        )
        self._download_bytes = self.meter.create_counter(
            "pointercache_download_bytes_total",
            unit="By",
            description="Artifact bytes downloaded from their origin (cache hits excluded)",
        )
        self._download_seconds = self.meter.create_histogram(
            "pointercache_download_seconds",
            unit="s",
            description="Wall time of artifact downloads from their origin (cache hits excluded)",
            explicit_bucket_boundaries_advisory=list(DOWNLOAD_BUCKETS),
        )
        self.meter.create_observable_gauge(
            "pointercache_served_info",
            callbacks=[self._served],
            description="1 for the version being served, with its provenance as attributes",
        )
        self.meter.create_observable_gauge(
            "pointercache_staleness_seconds",
            callbacks=[self._staleness],
            unit="s",
            description="Seconds since a registry last confirmed the served version",
        )
        self._flip_to_loaded = self.meter.create_histogram(
            "pointercache_flip_to_loaded_seconds",
            unit="s",
            description="Wall time from a flip to the model container having loaded the version",
            explicit_bucket_boundaries_advisory=list(LOAD_BUCKETS),
        )
        self._reload_failures = self.meter.create_counter(
            "pointercache_reload_failures_total",
            description="Reloads after a flip that were refused or did not finish in time",
        )
        self.meter.create_observable_gauge(
            "pointercache_loaded_info",
            callbacks=[self._loaded],
            description="1 for the version the model container has loaded, with how it was learnt",
        )
        self._reload_failures.add(0)
        for outcome in OUTCOMES:
            self._refreshes.add(0, {"outcome": outcome})
        for source in FALLBACK_SOURCES:
            self._fallbacks.add(0, {"source": source})
        self._blocks.add(0)
        self._resets.add(0)
        self._download_bytes.add(0)

    def bind(self, state: RefreshState) -> None:
        """Report from ``state`` in the observable gauges."""
        self._state = state

    def bind_loads(self, loads: LoadTracker) -> None:
        """Report what ``loads`` knows the model container has loaded."""
        self._loads = loads

    def loaded(self, seconds: float) -> None:
        """Record the time from a flip to the load of its version."""
        self._flip_to_loaded.record(seconds)

    def reload_failed(self) -> None:
        """Count a reload that was refused or gave up."""
        self._reload_failures.add(1)

    def refreshed(self, outcome: Outcome, seconds: float) -> None:
        """Count one refresh and its duration."""
        self._refreshes.add(1, {"outcome": outcome.value})
        self._refresh_duration.record(seconds, {"outcome": outcome.value})

    def fallback(self, source: str) -> None:
        """Count a publication from a step other than a registry."""
        self._fallbacks.add(1, {"source": source})

    def blocked(self) -> None:
        """Count a flip refused by the signature gate."""
        self._blocks.add(1)

    def revision_reset(self) -> None:
        """Count an answer accepted below the held claim after the grace period."""
        self._resets.add(1)

    def downloaded(self, size: int, seconds: float) -> None:
        """Count a finished artifact download."""
        self._download_bytes.add(size)
        self._download_seconds.record(seconds)

    def _served(self, _options: CallbackOptions) -> Iterable[Observation]:
        current = self._state.current if self._state else None
        if current is None:
            return []
        attrs: dict[str, Any] = {
            "model": current.model,
            "version": current.version,
            "digest": current.digest.removeprefix("sha256:")[:12],
            "source": current.source,
        }
        return [Observation(1, attrs)]

    def _loaded(self, _options: CallbackOptions) -> Iterable[Observation]:
        loads = self._loads
        mark = loads.loaded if loads is not None else None
        if loads is None or mark is None:
            return []
        attrs: dict[str, Any] = {
            "model": loads.model,
            "version": mark.version,
            "digest": mark.digest.removeprefix("sha256:")[:12],
            "via": mark.via.value,
        }
        return [Observation(1, attrs)]

    def _staleness(self, _options: CallbackOptions) -> Iterable[Observation]:
        state = self._state
        age = state.staleness() if state is not None else None
        if state is None or state.current is None or age is None:
            return []  # nothing served, or never confirmed by a registry (a pinned start)
        return [Observation(age, {"model": state.current.model})]
