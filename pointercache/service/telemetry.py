"""Metrics through the OpenTelemetry *API*; the sidecar configures the SDK and the exporter.

Few metrics, each named for the question it answers:

- ``pointercache_served_info`` (gauge = 1, attributes model/version/digest/source): what is served?
- ``pointercache_staleness_seconds``: how long since a registry last confirmed it?
- ``pointercache_refresh_duration_seconds`` (histogram): how long does a refresh take?
- ``pointercache_refreshes_total`` (by outcome): flipped, rollback, unchanged, stale, blocked,
  failed, unavailable.
- ``pointercache_fallbacks_total`` (by source): how often did we serve without a registry?
- ``pointercache_signature_blocks_total``: how often did the signature gate refuse a flip?
- ``pointercache_download_bytes_total`` / ``pointercache_download_seconds``: what did fetching cost?
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

if TYPE_CHECKING:
    from pointercache.service.state import Outcome, RefreshState


class Telemetry:
    """The instruments of one process."""

    def __init__(self, meter: metrics.Meter | None = None) -> None:
        self.meter = meter or metrics.get_meter("pointercache")
        self._state: RefreshState | None = None
        self._refresh_duration = self.meter.create_histogram(
            "pointercache_refresh_duration_seconds",
            unit="s",
            description="Wall time of one refresh (resolve, and stage and flip when it moved)",
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
        self._download_bytes = self.meter.create_counter(
            "pointercache_download_bytes_total", unit="By", description="Artifact bytes fetched"
        )
        self._download_seconds = self.meter.create_histogram(
            "pointercache_download_seconds", unit="s", description="Wall time of artifact fetches"
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

    def bind(self, state: RefreshState) -> None:
        """Report from ``state`` in the observable gauges."""
        self._state = state

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

    def _staleness(self, _options: CallbackOptions) -> Iterable[Observation]:
        state = self._state
        if state is None or state.current is None:
            return []
        if state.last_contact_monotonic is None:
            return [Observation(-1, {"model": state.current.model})]
        age = time.monotonic() - state.last_contact_monotonic
        return [Observation(age, {"model": state.current.model})]
