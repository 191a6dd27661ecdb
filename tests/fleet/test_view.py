"""The fleet view and the readiness wait of two-phase promotion, against kmock's emulator."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from pointercache.fleet import view as fleet
from pointercache.fleet.view import (
    FleetRow,
    collect,
    render_table,
    skew,
    skew_exit_code,
    wait_staged,
)
from pointercache.model.loaded import Loaded, Via
from tests.helpers import await_until as eventually
from tests.kube_api import kmock_url

NOW = datetime(2026, 1, 1, 0, 10, tzinfo=UTC)
D8, D9 = "sha256:" + "8" * 64, "sha256:" + "9" * 64


def add_pod(
    kmock,
    name: str,
    *,
    ready: bool = True,
    version: str | None = "8",
    digest: str = D8,
    staged: str = "8",
    source: str = "registry",
    seen: str = "2026-01-01T00:09:30Z",
    loaded: str | None = None,
) -> None:
    notes = {"team": "search"}
    if loaded is not None:
        notes["pointercache.dev/loaded"] = loaded
    if version is not None:
        notes |= {
            "pointercache.dev/version": version,
            "pointercache.dev/digest": digest,
            "pointercache.dev/source": source,
            "pointercache.dev/staged": staged,
            "pointercache.dev/registry-seen-at": seen,
        }
    kmock.objects["v1/pods", "ml", name] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "ml",
            "labels": {"app": "rec"},
            "annotations": notes,
        },
        "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


async def test_collect_rows_from_annotations_and_readiness(kmock, make_client):
    """collect() lists pods by label selector and reads version, digest, source, staleness."""
    add_pod(
        kmock,
        "rec-b",
        version="9",
        digest=D9,
        staged="8,9",
        source="lkg-node",
        seen="2026-01-01T00:00:00Z",
    )
    add_pod(kmock, "rec-a")
    add_pod(kmock, "rec-c", ready=False, version=None)
    client = make_client(kmock_url(kmock))
    rows = await asyncio.to_thread(collect, "ml", "app=rec", client=client, now=NOW)
    assert rows == [
        FleetRow("rec-a", True, "8", "8" * 12, "registry", ("8",), 30.0, D8),
        FleetRow("rec-b", True, "9", "9" * 12, "lkg-node", ("8", "9"), 600.0, D9),
        FleetRow("rec-c", False, None, None, None, (), None, None),
    ]
    lists = [r for r in kmock if r.method.value == "GET"]
    assert lists[0].url.path == "/api/v1/namespaces/ml/pods"
    assert lists[0].params == {"labelSelector": "app=rec"}
    table = render_table(rows)
    assert table.splitlines()[0].split() == [
        "POD",
        "READY",
        "VERSION",
        "LOADED",
        "DIGEST",
        "SOURCE",
        "STAGED",
        "STALENESS",
    ]
    assert table.splitlines()[2].split() == [
        "rec-b",
        "yes",
        "9",
        "-",
        "9" * 12,
        "lkg-node",
        "8,9",
        "10m",
    ]
    assert table.splitlines()[3].split() == ["rec-c", "no", "-", "-", "-", "-", "-", "-"]
    assert table.splitlines()[-1] == "skew: 1 (by published)"


def row(pod: str, version: str | None, *, ready: bool = True, digest: str = D8) -> FleetRow:
    return FleetRow(pod, ready, version, None, None, (), None, digest)


def test_skew_counts_served_versions_of_ready_pods():
    """Skew is distinct (version, digest) among ready pods minus one; unready pods do not count."""
    assert skew([]) == 0
    assert skew([row("a", "8"), row("b", "8")]) == 0
    assert skew([row("a", "8"), row("b", "9"), row("c", "10", ready=False)]) == 1
    assert skew([row("a", "8"), row("b", "8", digest=D9), row("c", "9")]) == 2
    assert skew([row("a", "8"), row("b", None)]) == 0


def test_skew_exit_code():
    """--max-skew N fails (exit 1) only when the skew is above N; no limit never fails."""
    rows = [row("a", "8"), row("b", "9")]
    assert skew_exit_code(rows, 1) == fleet.EXIT_OK
    assert skew_exit_code(rows, 0) == fleet.EXIT_SKEW
    assert skew_exit_code(rows, None) == fleet.EXIT_OK


async def test_wait_staged_returns_once_every_ready_pod_has_it(kmock, make_client):
    """wait_staged() succeeds when the last ready pod stages the candidate."""
    add_pod(kmock, "rec-a", staged="8,9")
    add_pod(kmock, "rec-b", staged="8")
    add_pod(kmock, "rec-c", ready=False, staged="8")
    client = make_client(kmock_url(kmock))
    waiting = asyncio.create_task(
        asyncio.to_thread(
            wait_staged, "ml", "app=rec", "9", None, 30.0, client=client, interval=0.05
        )
    )
    await eventually(lambda: len([r for r in kmock if r.method.value == "GET"]) >= 2)
    assert not waiting.done()
    add_pod(kmock, "rec-b", staged="8,9")
    report = await asyncio.wait_for(waiting, 30)
    assert report.ok
    assert report.staged == ("rec-a", "rec-b")
    assert report.not_ready == ("rec-c",)
    assert report.missing == ()


async def test_wait_staged_min_ready(kmock, make_client):
    """With min_ready, that many ready pods with the candidate are enough."""
    add_pod(kmock, "rec-a", staged="8,9")
    add_pod(kmock, "rec-b", staged="8")
    client = make_client(kmock_url(kmock))
    report = await asyncio.to_thread(
        wait_staged, "ml", "app=rec", "9", 1, 5.0, client=client, interval=0.05
    )
    assert report.ok
    assert report.missing == ("rec-b",)


async def test_wait_staged_timeout_names_the_pods(kmock, make_client):
    """On timeout the report is not ok and names pods lacking the version and unready pods."""
    add_pod(kmock, "rec-a", staged="8,9")
    add_pod(kmock, "rec-b", staged="8")
    add_pod(kmock, "rec-c", ready=False, version=None)
    client = make_client(kmock_url(kmock))
    report = await asyncio.to_thread(
        wait_staged, "ml", "app=rec", "9", None, 0.3, client=client, interval=0.05
    )
    assert not report.ok
    assert report.missing == ("rec-b",)
    assert report.not_ready == ("rec-c",)
    assert "missing on: rec-b" in report.summary()
    assert "not ready: rec-c" in report.summary()


def test_no_ready_pod_is_not_staged():
    """With no ready pod at all, 'every ready pod' is not satisfied."""
    report = fleet.staged_report([row("a", "9", ready=False)], "9", None, 0.0)
    assert not report.ok


def mark(version: str, digest: str, via: str = "ack") -> str:
    """A ``pointercache.dev/loaded`` annotation."""
    return Loaded(version, digest, Via(via), "2026-01-01T00:09:00.000Z").to_json()


def loaded_row(pod: str, version: str, loaded: str | None, *, ready: bool = True) -> FleetRow:
    digests = {"8": D8, "9": D9}
    return FleetRow(
        pod,
        ready,
        version,
        None,
        None,
        (),
        None,
        digests[version],
        loaded,
        digests.get(loaded or ""),
        "ack" if loaded else None,
    )


async def test_the_loaded_column_names_pods_that_did_not_reload(kmock, make_client):
    """A pod whose model container still serves 8 after publishing 9 is marked and named; skew
    is counted on loaded versions by default, and on published ones with by=published."""
    add_pod(kmock, "rec-a", version="9", digest=D9, staged="8,9", loaded=mark("9", D9, "hook"))
    add_pod(kmock, "rec-b", version="9", digest=D9, staged="8,9", loaded=mark("8", D8))
    add_pod(kmock, "rec-c", version="9", digest=D9, staged="9", loaded="{not json")
    client = make_client(kmock_url(kmock))
    rows = await asyncio.to_thread(collect, "ml", "app=rec", client=client, now=NOW)
    assert [(r.loaded, r.loaded_via) for r in rows] == [("9", "hook"), ("8", "ack"), (None, None)]
    assert fleet.default_by(rows) == "loaded"
    assert skew(rows, "loaded") == 1 and skew(rows, "published") == 0
    lines = render_table(rows).splitlines()
    assert lines[1].split()[3] == "9" and lines[2].split()[3] == "8*" and lines[3].split()[3] == "-"
    assert lines[-2] == "skew: 1 (by loaded)"
    assert lines[-1] == (
        "not loaded: rec-b (loaded 8, published 9), rec-c (loaded nothing reported, published 9)"
    )
    assert render_table(rows, "published").splitlines()[-1] == "skew: 0 (by published)"


def test_skew_by_loaded_leaves_out_pods_that_report_nothing_and_unready_pods():
    """Only ready pods that report a load count for loaded skew."""
    rows = [
        loaded_row("a", "9", "9"),
        loaded_row("b", "9", None),
        loaded_row("c", "9", "8", ready=False),
    ]
    assert skew(rows, "loaded") == 0
    assert [r.pod for r in fleet.behind(rows)] == ["b"]
    assert skew_exit_code([loaded_row("a", "9", "9"), loaded_row("b", "9", "8")], 0, "loaded") == 1


async def test_wait_for_loaded_names_the_pods_still_on_the_old_version(kmock, make_client):
    """Waiting for loads succeeds once every ready pod's model container has the version; on
    timeout it names those that have not."""
    add_pod(kmock, "rec-a", version="9", digest=D9, loaded=mark("9", D9))
    add_pod(kmock, "rec-b", version="9", digest=D9, loaded=mark("8", D8))
    client = make_client(kmock_url(kmock))
    report = await asyncio.to_thread(
        fleet.wait_for,
        "ml",
        "app=rec",
        "9",
        None,
        0.3,
        stage="loaded",
        client=client,
        interval=0.05,
    )
    assert not report.ok and report.missing == ("rec-b",)
    assert report.summary().startswith("version 9 NOT loaded on 1 ready pod(s); missing on: rec-b")
    add_pod(kmock, "rec-b", version="9", digest=D9, loaded=mark("9", D9))
    report = await asyncio.to_thread(
        fleet.wait_for,
        "ml",
        "app=rec",
        "9",
        None,
        5.0,
        stage="loaded",
        client=client,
        interval=0.05,
    )
    assert report.ok and report.staged == ("rec-a", "rec-b")
