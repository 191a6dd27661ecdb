"""Configure the OpenTelemetry SDK with a Prometheus reader on a private registry."""

from __future__ import annotations

from collections.abc import Callable

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from pointercache.service.telemetry import Telemetry


def setup(model: str) -> tuple[Telemetry, Callable[[], tuple[bytes, str]], MeterProvider]:
    """Return the instruments, a ``/metrics`` renderer, and the provider (to shut down)."""
    registry = CollectorRegistry(auto_describe=True)
    reader = PrometheusMetricReader(
        registry=registry, disable_target_info=True, scope_info_enabled=False
    )
    provider = MeterProvider(
        metric_readers=[reader],
        resource=Resource.create({"service.name": "pointercache", "pointercache.model": model}),
    )
    telemetry = Telemetry(provider.get_meter("pointercache"))

    def render() -> tuple[bytes, str]:
        return generate_latest(registry), CONTENT_TYPE_LATEST

    return telemetry, render, provider
