"""The fleet view: which version each pod serves, how stale it is, and the skew between pods.

Rows come from the ``pointercache.dev/*`` annotations the sidecars keep on their pods (see
``podinfo``) and from each pod's Ready condition. **Skew** is the number of distinct versions
(version and digest) among *ready* pods that report one, minus one: 0 when the ready fleet
agrees (or nothing is ready), 1 while a rollout is half-way, more when pods drifted apart. It is
counted on the versions the model containers have **loaded** (``pointercache.dev/loaded``) or on
the **published** ones; ``default_by`` picks loaded as soon as any pod reports a load. Pods that
are not ready do not count: they serve no traffic. ``behind`` names the ready pods whose model
container does not serve the published version (or reported no load while others did).

``wait_for`` is the wait of two-phase promotion: it polls the pods until the candidate version
is staged (before the alias moves) or loaded (after) on every ready pod (or on ``min_ready`` of
them) and reports which pods are not ready or do not have it when the time runs out.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from pointercache.adapters.kube.client import KubeClient, api
from pointercache.base.clock import parse_time
from pointercache.cluster import pods as podinfo
from pointercache.errors import InvalidAck, KubeError
from pointercache.model.loaded import Loaded

EXIT_OK, EXIT_SKEW = 0, 1
By = Literal["loaded", "published"]
"""What skew is counted on."""
Stage = Literal["staged", "loaded"]
"""What promotion waits for."""


@dataclass(frozen=True, slots=True)
class FleetRow:
    """One pod as the fleet view shows it."""

    pod: str
    """Pod name."""
    ready: bool
    """The pod's Ready condition is True and it is not being deleted."""
    version: str | None
    """Served version (None: the sidecar has not annotated the pod yet)."""
    digest12: str | None
    """First 12 hex digits of the served digest."""
    source: str | None
    """Which step of the chain answered: registry, lkg-node, lkg-cluster, pinned."""
    staged: tuple[str, ...]
    """Versions staged on the pod's shared volume (current included)."""
    staleness: float | None
    """Seconds since a registry last confirmed the served version (None: never or unknown)."""
    digest: str | None = field(default=None, repr=False)
    """Full served digest (skew compares it)."""
    loaded: str | None = None
    """Version the model container reports loaded (None: no load reported, or unreadable)."""
    loaded_digest: str | None = field(default=None, repr=False)
    """Its full digest."""
    loaded_via: str | None = None
    """How the sidecar learnt it: ack, hook or probe."""

    @property
    def behind(self) -> bool:
        """The model container serves something other than the published version."""
        return self.loaded is None or (self.loaded, self.loaded_digest) != (
            self.version,
            self.digest,
        )


def _ready(pod: dict[str, Any]) -> bool:
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def row_from_pod(pod: dict[str, Any], now: datetime) -> FleetRow:
    """Build a row from a pod object (JSON dict) at time ``now``."""
    meta = pod.get("metadata") or {}
    notes = meta.get("annotations") or {}
    digest = notes.get(podinfo.DIGEST) or None
    seen = parse_time(notes.get(podinfo.SEEN))
    staged = tuple(v for v in (notes.get(podinfo.STAGED) or "").split(",") if v)
    loaded = _loaded(notes.get(podinfo.LOADED))
    return FleetRow(
        pod=str(meta.get("name", "")),
        ready=_ready(pod),
        version=notes.get(podinfo.VERSION) or None,
        digest12=digest.removeprefix("sha256:")[:12] if digest else None,
        source=notes.get(podinfo.SOURCE) or None,
        staged=staged,
        staleness=max(0.0, (now - seen).total_seconds()) if seen else None,
        digest=digest,
        loaded=loaded.version if loaded else None,
        loaded_digest=loaded.digest if loaded else None,
        loaded_via=loaded.via.value if loaded else None,
    )


def _loaded(text: object) -> Loaded | None:
    """The ``pointercache.dev/loaded`` annotation, validated (whoever may patch pods wrote it)."""
    if not isinstance(text, str) or not text:
        return None
    try:
        return Loaded.parse(text)
    except InvalidAck:
        return None


def collect(
    namespace: str, selector: str, *, client: KubeClient | None = None, now: datetime | None = None
) -> list[FleetRow]:
    """List the pods of ``namespace`` matching the label ``selector``; rows sorted by pod name."""
    pods = (client or api()).list_pods(namespace, selector)
    at = now or datetime.now(UTC)
    return sorted((row_from_pod(p, at) for p in pods), key=lambda r: r.pod)


def default_by(rows: Sequence[FleetRow]) -> By:
    """``loaded`` when any pod reports a load, else ``published``."""
    return "loaded" if any(r.loaded for r in rows) else "published"


def skew(rows: Sequence[FleetRow], by: By = "published") -> int:
    """Distinct (version, digest) pairs of ready pods, minus one (never below 0).

    ``by`` published counts what the sidecars published, loaded what the model containers
    report loaded (pods that report no load are left out: ``behind`` names them).
    """
    if by == "loaded":
        versions = {(r.loaded, r.loaded_digest) for r in rows if r.ready and r.loaded}
    else:
        versions = {(r.version, r.digest) for r in rows if r.ready and r.version}
    return max(0, len(versions) - 1)


def behind(rows: Sequence[FleetRow]) -> list[FleetRow]:
    """Ready pods whose model container does not serve the published version."""
    return [r for r in rows if r.ready and r.version and r.behind]


def skew_exit_code(rows: Sequence[FleetRow], max_skew: int | None, by: By = "published") -> int:
    """``EXIT_SKEW`` (1) when ``max_skew`` is set and exceeded, else ``EXIT_OK`` (0)."""
    if max_skew is not None and skew(rows, by) > max_skew:
        return EXIT_SKEW
    return EXIT_OK


def format_age(seconds: float | None) -> str:
    """``42s``, ``5m``, ``3h``, ``2d``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def _loaded_cell(row: FleetRow) -> str:
    if row.loaded is None:
        return "-"
    return f"{row.loaded}*" if row.version and row.behind else row.loaded


def render_table(rows: Sequence[FleetRow], by: By | None = None) -> str:
    """A kubectl-style table, one line per pod, a ``skew: N (by ...)`` line, and the pods whose
    model container does not serve the published version (marked ``*`` in LOADED)."""
    by = by or default_by(rows)
    header = ("POD", "READY", "VERSION", "LOADED", "DIGEST", "SOURCE", "STAGED", "STALENESS")
    lines = [header] + [
        (
            r.pod,
            "yes" if r.ready else "no",
            r.version or "-",
            _loaded_cell(r),
            r.digest12 or "-",
            r.source or "-",
            ",".join(r.staged) or "-",
            format_age(r.staleness),
        )
        for r in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = [
        "   ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in lines
    ]
    text.append(f"skew: {skew(rows, by)} (by {by})")
    lagging = behind(rows) if by == "loaded" else []
    if lagging:
        names = ", ".join(
            f"{r.pod} (loaded {r.loaded or 'nothing reported'}, published {r.version})"
            for r in lagging
        )
        text.append(f"not loaded: {names}")
    return "\n".join(text) + "\n"


@dataclass(frozen=True, slots=True)
class FleetReport:
    """Outcome of ``wait_for``."""

    ok: bool
    """The condition was met before the timeout."""
    version: str
    """The candidate version waited for."""
    rows: tuple[FleetRow, ...]
    """The last view of the fleet."""
    staged: tuple[str, ...]
    """Ready pods that have the version (staged or served; loaded, when waiting for loads)."""
    missing: tuple[str, ...]
    """Ready pods that do not have it."""
    not_ready: tuple[str, ...]
    """Pods that are not ready (they do not count either way)."""
    waited: float
    """Seconds spent waiting."""
    stage: Stage = "staged"
    """What was waited for."""

    def summary(self) -> str:
        """One line for humans and CI logs."""
        state = self.stage if self.ok else f"NOT {self.stage}"
        parts = [f"version {self.version} {state} on {len(self.staged)} ready pod(s)"]
        if self.missing:
            parts.append(f"missing on: {', '.join(self.missing)}")
        if self.not_ready:
            parts.append(f"not ready: {', '.join(self.not_ready)}")
        return "; ".join(parts) + f" (waited {self.waited:.0f}s)"


def _has(row: FleetRow, version: str, stage: Stage) -> bool:
    if stage == "loaded":
        return row.loaded == version
    return version in row.staged or row.version == version


def staged_report(
    rows: Sequence[FleetRow],
    version: str,
    min_ready: int | None,
    waited: float,
    stage: Stage = "staged",
) -> FleetReport:
    """Evaluate one view: every ready pod (``min_ready`` None or 0), else ``min_ready`` of them."""
    ready = [r for r in rows if r.ready]
    have = tuple(r.pod for r in ready if _has(r, version, stage))
    missing = tuple(r.pod for r in ready if not _has(r, version, stage))
    ok = len(have) >= min_ready if min_ready else bool(ready) and not missing
    return FleetReport(
        ok=ok,
        version=version,
        rows=tuple(rows),
        staged=have,
        missing=missing,
        not_ready=tuple(r.pod for r in rows if not r.ready),
        waited=waited,
        stage=stage,
    )


def wait_staged(
    namespace: str,
    selector: str,
    version: str,
    min_ready: int | None,
    timeout: float,
    *,
    client: KubeClient | None = None,
    interval: float = 2.0,
    sleep: Callable[[float], None] = time.sleep,
) -> FleetReport:
    """``wait_for`` the version to be staged (two-phase promotion, before the alias moves)."""
    return wait_for(
        namespace,
        selector,
        version,
        min_ready,
        timeout,
        client=client,
        interval=interval,
        sleep=sleep,
    )


def wait_for(
    namespace: str,
    selector: str,
    version: str,
    min_ready: int | None,
    timeout: float,
    *,
    stage: Stage = "staged",
    client: KubeClient | None = None,
    interval: float = 2.0,
    sleep: Callable[[float], None] = time.sleep,
) -> FleetReport:
    """Poll the pods until ``version`` is ``stage`` where required or ``timeout`` seconds pass.

    API errors while polling are retried until the timeout (the last one is raised if no view
    of the fleet was ever obtained).
    """
    start = time.monotonic()
    last: FleetReport | None = None
    error: KubeError | None = None
    while True:
        waited = time.monotonic() - start
        try:
            last = staged_report(
                collect(namespace, selector, client=client), version, min_ready, waited, stage
            )
            error = None
        except KubeError as exc:  # the API may blip during a rollout
            error = exc
        if last is not None and last.ok:
            return last
        if waited >= timeout:
            if last is None and error is not None:
                raise error
            assert last is not None
            return last
        sleep(min(interval, max(0.0, timeout - waited)))
