"""Documented metrics, exported by a real sidecar in seconds and bytes, mean what they say."""

from __future__ import annotations

import re
import time

from prometheus_client.metrics_core import Metric

from tests.conftest import REPO
from tests.ops.conftest import Monitored, elapsed_since

DOC = REPO / "docs" / "observability.md"


def documented_metrics() -> dict[str, str]:
    """Name → type from the table under "## Metrics" of docs/observability.md."""
    text = DOC.read_text()
    section = text.split("## Metrics", 1)[1].split("\n## ", 1)[0]
    table = section.split("\n### ", 1)[0]  # the metrics a sidecar exports today
    rows = re.findall(
        r"^\| `(pointercache_[a-z_]+)` \| (gauge|counter|histogram) \|", table, re.MULTILINE
    )
    assert len(rows) >= 8, "the metrics table of docs/observability.md was not found"
    return dict(rows)


def family(metrics: dict[str, Metric], name: str) -> Metric:
    """The family exported as ``name`` (prometheus_client drops ``_total`` from counters)."""
    key = name.removesuffix("_total")
    assert key in metrics, f"{name} is documented but not exported"
    return metrics[key]


def value(metric: Metric, sample_name: str, **labels: str) -> float:
    """The one sample of ``metric`` called ``sample_name`` whose labels include ``labels``."""
    found = [
        s.value
        for s in metric.samples
        if s.name == sample_name and labels.items() <= s.labels.items()
    ]
    assert len(found) == 1, f"{sample_name}{labels}: {metric.samples}"
    return found[0]


def bounds(metric: Metric) -> list[float]:
    """The finite bucket bounds of a histogram family."""
    les = {float(s.labels["le"]) for s in metric.samples if s.name.endswith("_bucket")}
    return sorted(le for le in les if le != float("inf"))


def test_every_documented_metric_is_exported_with_its_type(monitored: Monitored) -> None:
    """After a flip the model container acknowledged, /metrics holds each documented family with
    the documented type, and no other."""
    monitored.acknowledge()
    monitored.publish(2, "2", "flipped")
    monitored.acknowledge()
    metrics = monitored.scrape()
    documented = documented_metrics()
    for name, kind in documented.items():
        assert family(metrics, name).type == kind, name
    exported = {m.name for m in metrics.values() if m.name.startswith("pointercache_")}
    assert exported == {n.removesuffix("_total") for n in documented}


def test_durations_have_bucket_bounds_in_seconds(monitored: Monitored) -> None:
    """Histogram bounds reach from milliseconds to minutes (not the SDK's millisecond defaults)."""
    monitored.publish(2, "2", "flipped")
    metrics = monitored.scrape()
    refresh = bounds(family(metrics, "pointercache_refresh_duration_seconds"))
    download = bounds(family(metrics, "pointercache_download_seconds"))
    assert refresh[0] <= 0.01 and refresh[-1] >= 300
    assert download[0] <= 0.25 and download[-1] >= 1800


def test_flip_to_loaded_runs_from_the_flip_to_the_acknowledgement(monitored: Monitored) -> None:
    """The histogram records the seconds between the flip and the ack of the new version, and
    loaded_info names the acknowledged version with the served one's digest label."""
    monitored.acknowledge()
    started = time.monotonic()
    monitored.publish(2, "2", "flipped")
    time.sleep(0.5)
    monitored.acknowledge()
    took = elapsed_since(started)
    metrics = monitored.scrape()
    histogram = family(metrics, "pointercache_flip_to_loaded_seconds")
    assert value(histogram, "pointercache_flip_to_loaded_seconds_count") == 1
    assert 0.5 <= value(histogram, "pointercache_flip_to_loaded_seconds_sum") <= took
    assert bounds(histogram)[0] <= 0.01 and bounds(histogram)[-1] >= 600
    served = family(metrics, "pointercache_served_info").samples[0].labels
    loaded = family(metrics, "pointercache_loaded_info").samples[0].labels
    assert (loaded["version"], loaded["digest"], loaded["via"]) == ("2", served["digest"], "ack")
    failures = family(metrics, "pointercache_reload_failures_total")
    assert value(failures, "pointercache_reload_failures_total") == 0


def test_counters_start_at_zero_for_every_outcome_and_source(monitored: Monitored) -> None:
    """Outcomes and sources that never happened yet are exported as 0, not left out."""
    metrics = monitored.scrape()
    refreshes = family(metrics, "pointercache_refreshes_total")
    for outcome in ("flipped", "rollback", "stale", "blocked", "failed", "unavailable"):
        assert value(refreshes, "pointercache_refreshes_total", outcome=outcome) == 0
    fallbacks = family(metrics, "pointercache_fallbacks_total")
    for source in ("lkg-node", "lkg-cluster", "pinned"):
        assert value(fallbacks, "pointercache_fallbacks_total", source=source) == 0
    blocks = family(metrics, "pointercache_signature_blocks_total")
    assert value(blocks, "pointercache_signature_blocks_total") == 0


def test_a_flip_counts_its_download_in_bytes_and_seconds(monitored: Monitored) -> None:
    """Flipping to v2 downloads v2 once: its exact size in bytes and one timed download."""
    size = sum(p.stat().st_size for p in (monitored.world.base / "artifacts" / "v2").iterdir())
    started = time.monotonic()
    monitored.publish(2, "2", "flipped")
    took = elapsed_since(started)
    metrics = monitored.scrape()
    downloaded = family(metrics, "pointercache_download_bytes_total")
    assert value(downloaded, "pointercache_download_bytes_total") == size
    seconds = family(metrics, "pointercache_download_seconds")
    assert value(seconds, "pointercache_download_seconds_count") == 1
    assert 0 < value(seconds, "pointercache_download_seconds_sum") <= took


def test_staleness_grows_while_every_answer_is_refused(monitored: Monitored) -> None:
    """An answer at an older revision is contact, not confirmation: staleness keeps growing."""
    monitored.publish(5, "1", "confirmed")  # the registry confirms v1 at revision 5
    confirmed_by = time.monotonic()  # the confirmation happened before this instant
    monitored.publish(3, "2", "stale-answer")  # a lagging answer: refused
    time.sleep(1.0)
    assert monitored.refresh() == "stale"  # fresh contact with the registry, refused again
    lower_bound = elapsed_since(confirmed_by)
    metrics = monitored.scrape()
    staleness = value(
        family(metrics, "pointercache_staleness_seconds"), "pointercache_staleness_seconds"
    )
    assert staleness >= lower_bound >= 1.0
    # /status rounds to the millisecond
    assert monitored.sidecar.status()["staleness_seconds"] >= lower_bound - 0.001


def test_a_confirmation_resets_staleness(monitored: Monitored) -> None:
    """POST /refresh that names the served version again brings staleness below its own age."""
    time.sleep(1.0)
    started = time.monotonic()
    assert monitored.refresh() == "unchanged"
    upper_bound = elapsed_since(started)
    metrics = monitored.scrape()
    staleness = value(
        family(metrics, "pointercache_staleness_seconds"), "pointercache_staleness_seconds"
    )
    assert 0 <= staleness <= elapsed_since(started)
    assert upper_bound < 1.0 or staleness <= upper_bound + elapsed_since(started)
