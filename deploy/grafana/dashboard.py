"""Build the pointercache Grafana dashboard (deploy/grafana/pointercache.json) from code.

    python deploy/grafana/dashboard.py deploy/grafana/pointercache.json   # or: make dashboard

The JSON is checked in so it can be imported as it is; tests/ops regenerate it and compare
bytes, and evaluate every expression against a real Prometheus scraping a real sidecar.

Rows: "Serving" (what each pod serves, from which source, how stale, refreshes, downloads,
fallbacks, blocked flips: the metrics every sidecar exports) and "Model container" (the version
the model container acknowledged loading, and how long that took after a flip).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import prometheus, stat, table, timeseries
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DataSourceRef,
    Panel,
    VariableRefresh,
    VariableSort,
)
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
SCOPE = 'namespace=~"$namespace", pod=~"$pod"'
"""Label matchers every query carries (regex matchers also match a missing label)."""
MODEL_SCOPE = f'{SCOPE}, model=~"$model"'
"""...and the model, for the series that carry one."""
RATE = "$__rate_interval"


def query(expr: str, legend: str = "", *, table_format: bool = False) -> prometheus.Dataquery:
    """A Prometheus query on the dashboard's data source."""
    q = prometheus.Dataquery().expr(expr).datasource(DATASOURCE).ref_id("A")
    if legend:
        q = q.legend_format(legend)
    if table_format:
        q = q.instant().format(PromQueryFormat.TABLE)
    return q


def series(
    title: str, description: str, unit: str, *queries: prometheus.Dataquery
) -> timeseries.Panel:
    """A time series panel."""
    panel = timeseries.Panel().title(title).description(description).unit(unit)
    panel = panel.datasource(DATASOURCE).height(8).span(12)
    for index, q in enumerate(queries):
        panel = panel.with_target(q.ref_id("ABCDEFGH"[index]))
    return panel


def grid(
    panel: table.Panel | stat.Panel, title: str, description: str, width: int
) -> Builder[Panel]:
    """Title, description, data source and size of a table or stat panel."""
    return panel.title(title).description(description).datasource(DATASOURCE).height(8).span(width)


def per_pod(function: str, metric: str, matchers: str = SCOPE) -> str:
    """``sum by (namespace, pod) (function(metric{matchers}[$__rate_interval]))``."""
    return f"sum by (namespace, pod) ({function}({metric}{{{matchers}}}[{RATE}]))"


def quantiles(histogram: str) -> list[prometheus.Dataquery]:
    """p50 and p99 of a histogram over every selected pod."""
    return [
        query(
            f"histogram_quantile({q}, sum by (le) (rate({histogram}_bucket{{{SCOPE}}}[{RATE}])))",
            f"p{round(q * 100)}",
        )
        for q in (0.5, 0.99)
    ]


SERVED = f"pointercache_served_info{{{MODEL_SCOPE}}}"
LOADED = f"pointercache_loaded_info{{{MODEL_SCOPE}}}"
POD_VERSION = "namespace, pod, instance, model, version, digest"


def serving_row() -> list[Builder[Panel]]:
    """The core row: every panel reads series each sidecar exports."""
    return [
        grid(
            table.Panel().with_target(
                query(f"max by ({POD_VERSION}, source) ({SERVED})", table_format=True)
            ),
            "Served version and source per pod",
            "pointercache_served_info: the version each pod serves and the step of the chain "
            "that gave it (registry, lkg-node, lkg-cluster, pinned).",
            16,
        ),
        grid(
            stat.Panel().with_target(
                query(
                    f"count by (model) (count by (model, version, digest) ({SERVED}))", "{{model}}"
                )
            ),
            "Versions served",
            "Distinct (version, digest) pairs served per model: 1 when the fleet agrees, "
            "2 during a rollout.",
            8,
        ),
        series(
            "Pods by source",
            "Pods serving from each source; anything but registry is a fallback.",
            "short",
            query(f"count by (source) ({SERVED})", "{{source}}"),
        ),
        series(
            "Staleness",
            "pointercache_staleness_seconds: time since a registry last confirmed the version "
            "each pod serves.",
            "s",
            query(
                f"max by (namespace, pod) (pointercache_staleness_seconds{{{MODEL_SCOPE}}})",
                "{{namespace}}/{{pod}}",
            ),
        ),
        series(
            "Refresh outcomes",
            "Refreshes per second by outcome: flipped, rollback, unchanged, stale, blocked, "
            "failed, unavailable.",
            "ops",
            query(
                f"sum by (outcome) (rate(pointercache_refreshes_total{{{SCOPE}}}[{RATE}]))",
                "{{outcome}}",
            ),
        ),
        series(
            "Refresh duration",
            "p50 and p99 of pointercache_refresh_duration_seconds (a flip includes its download).",
            "s",
            *quantiles("pointercache_refresh_duration_seconds"),
        ),
        series(
            "Download throughput",
            "Artifact bytes per second downloaded from their origin (node cache hits excluded).",
            "Bps",
            query(per_pod("rate", "pointercache_download_bytes_total"), "{{namespace}}/{{pod}}"),
        ),
        series(
            "Download duration",
            "p50 and p99 of pointercache_download_seconds.",
            "s",
            *quantiles("pointercache_download_seconds"),
        ),
        series(
            "Fallbacks",
            "Publications from a fallback source (pointercache_fallbacks_total) by source.",
            "short",
            query(
                f"sum by (source) (increase(pointercache_fallbacks_total{{{SCOPE}}}[{RATE}]))",
                "{{source}}",
            ),
        ),
        series(
            "Blocked flips",
            "Versions refused by the signature gate (counted once each), and refreshes that "
            "stayed blocked.",
            "short",
            query(
                per_pod("increase", "pointercache_signature_blocks_total"),
                "refused {{namespace}}/{{pod}}",
            ),
            query(
                per_pod("increase", "pointercache_refreshes_total", f'{SCOPE}, outcome="blocked"'),
                "still blocked {{namespace}}/{{pod}}",
            ),
        ),
    ]


def model_row() -> list[Builder[Panel]]:
    """Panels for the model container's acknowledgements (pointercache_loaded_info)."""
    behind = (
        f"count by (model) (max by ({POD_VERSION}) ({SERVED}) "
        f"unless on ({POD_VERSION}) max by ({POD_VERSION}) ({LOADED}))"
    )
    return [
        grid(
            table.Panel().with_target(
                query(f"max by ({POD_VERSION}, via) ({LOADED})", table_format=True)
            ),
            "Loaded version per pod",
            "pointercache_loaded_info: the version each model container acknowledged loading, "
            "and how (via).",
            12,
        ),
        series(
            "Pods not serving the published version",
            "Pods whose model container has not (yet) loaded the version the sidecar published.",
            "short",
            query(behind, "{{model}}"),
        ),
        series(
            "Flip to loaded",
            "p50 and p99 of pointercache_flip_to_loaded_seconds: from the flip to the model "
            "container's acknowledgement.",
            "s",
            *quantiles("pointercache_flip_to_loaded_seconds"),
        ),
    ]


def variable(name: str, label: str, selector: str) -> dash.QueryVariable:
    """A multi-value label filter fed by ``label_values``, "All" matching any value."""
    return (
        dash.QueryVariable(name)
        .label(label)
        .datasource(DATASOURCE)
        .query(f"label_values({selector}, {name})")
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
    )


def build() -> dash.Dashboard:
    """The whole dashboard."""
    board = (
        dash.Dashboard("pointercache")
        .uid("pointercache")
        .description(
            "What each model-serving pod serves, from where, how stale, and what refreshing costs."
        )
        .tags(["pointercache", "mlops"])
        .refresh("30s")
        .time("now-6h", "now")
        .timezone("browser")
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .with_variable(
            dash.DatasourceVariable("datasource").label("Data source").type("prometheus")
        )
        .with_variable(variable("namespace", "Namespace", "pointercache_served_info"))
        .with_variable(
            variable("model", "Model", 'pointercache_served_info{namespace=~"$namespace"}')
        )
        .with_variable(
            variable(
                "pod", "Pod", 'pointercache_served_info{namespace=~"$namespace", model=~"$model"}'
            )
        )
        .with_row(dash.Row("Serving"))
    )
    for panel in serving_row():
        board = board.with_panel(panel)
    board = board.with_row(dash.Row("Model container (needs load acknowledgements)"))
    for panel in model_row():
        board = board.with_panel(panel)
    return board


def render() -> str:
    """The dashboard as stable, indented JSON with a final newline."""
    return json.dumps(build().build(), cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


def main(argv: list[str]) -> int:
    """Write the JSON to the path given, or print it."""
    text = render()
    if len(argv) > 1:
        Path(argv[1]).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
