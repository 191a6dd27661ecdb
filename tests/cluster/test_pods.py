"""Pod annotations (JSON merge-patch) and core/v1 Events, against kmock's emulator."""

from __future__ import annotations

from datetime import datetime

import kmock as kmocklib

from pointercache.cluster.pods import LOADED, REASON_FLIP_BLOCKED, PodReporter
from pointercache.model.loaded import Loaded, Via
from pointercache.model.pointer import Pointer
from pointercache.service.reporting import KubeReporter
from pointercache.service.state import Happening
from tests.helpers import make_pointer
from tests.kube_api import kmock_url, status

DIGEST = "sha256:" + "ef" * 32


def pointer(version: str = "9", seen: str | None = "2026-01-01T00:00:00.000Z") -> Pointer:
    return make_pointer(
        version=version,
        uri="s3://models/recommender/9/",
        digest=DIGEST,
        revision=4,
        source="lkg-node",
        source_detail="registry timed out",
        resolved_at="2026-01-01T00:00:00.000Z",
        registry_seen_at=seen,
    )


def kmock_response(code: int, reason: str) -> kmocklib.Response:
    return kmocklib.Response(status=code, payload=status(code, reason))


def add_pod(kmock, name: str = "server-0") -> None:
    kmock.objects["v1/pods", "ml", name] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "ml", "annotations": {"team": "search"}},
    }


async def test_annotate_sends_this_merge_patch(kmock, make_client):
    """annotate() merge-patches exactly the pointercache.dev/* annotations, other keys kept."""
    add_pod(kmock)
    reporter = PodReporter("ml", "server-0", client=make_client(kmock_url(kmock)))
    assert await reporter.annotate(pointer(), ["10", "9", "8"])
    patches = [r for r in kmock if r.method.value == "PATCH"]
    assert len(patches) == 1
    assert patches[0].url.path == "/api/v1/namespaces/ml/pods/server-0"
    assert patches[0].headers["Content-Type"] == "application/merge-patch+json"
    assert patches[0].data == {
        "metadata": {
            "annotations": {
                "pointercache.dev/version": "9",
                "pointercache.dev/digest": DIGEST,
                "pointercache.dev/source": "lkg-node",
                "pointercache.dev/staged": "8,9,10",
                "pointercache.dev/registry-seen-at": "2026-01-01T00:00:00.000Z",
                "pointercache.dev/loaded": None,
            }
        }
    }
    notes = kmock.objects["v1/pods", "ml", "server-0"]["metadata"]["annotations"]
    assert notes["team"] == "search"
    assert notes["pointercache.dev/version"] == "9"


async def test_annotate_skips_repeats_and_throttles_seen_only_changes(kmock, make_client):
    """An identical patch is not re-sent; a change of registry-seen-at alone waits seen_every."""
    add_pod(kmock)
    reporter = PodReporter("ml", "server-0", client=make_client(kmock_url(kmock)), seen_every=3600)
    assert await reporter.annotate(pointer(), ["9"])
    assert not await reporter.annotate(pointer(), ["9"])
    assert not await reporter.annotate(pointer(seen="2026-01-01T00:00:15.000Z"), ["9"])
    assert await reporter.annotate(pointer(), ["9", "10"])
    assert len([r for r in kmock if r.method.value == "PATCH"]) == 2


async def test_annotate_failure_is_logged_not_raised(kmock, make_client):
    """A 404 on the pod patch or a 403 on the Event returns False and raises nothing."""
    kmock[kmock.resource("", "v1", "events")] << kmock_response(403, "Forbidden")
    reporter = PodReporter("ml", "ghost", client=make_client(kmock_url(kmock)))
    assert not await reporter.annotate(pointer(), ["9"])
    assert not await reporter.event("ModelFlipped", "9 is live")
    assert [r.method.value for r in kmock] == ["PATCH", "POST"]


async def test_event_payload(kmock, make_client):
    """event() POSTs a core/v1 Event about the pod with this reason, message and type."""
    add_pod(kmock)
    reporter = PodReporter(
        "ml", "server-0", client=make_client(kmock_url(kmock)), pod_uid="0f1e", node_name="node-a"
    )
    assert await reporter.event(
        REASON_FLIP_BLOCKED,
        "signature mismatch: amount missing (s3://u:secret@bucket/x)",
        "Warning",
    )
    posts = [r for r in kmock if r.method.value == "POST"]
    assert len(posts) == 1
    assert posts[0].url.path == "/api/v1/namespaces/ml/events"
    body = dict(posts[0].data)
    name = body["metadata"].pop("name")
    first, last = body.pop("firstTimestamp"), body.pop("lastTimestamp")
    assert body == {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"namespace": "ml"},
        "involvedObject": {
            "apiVersion": "v1",
            "kind": "Pod",
            "name": "server-0",
            "namespace": "ml",
            "uid": "0f1e",
        },
        "reason": "FlipBlocked",
        "message": "signature mismatch: amount missing (s3://***@bucket/x)",
        "type": "Warning",
        "source": {"component": "pointercache", "host": "node-a"},
        "reportingComponent": "pointercache",
        "reportingInstance": "server-0",
        "count": 1,
    }
    assert name.startswith("server-0.")
    assert first == last
    assert datetime.fromisoformat(first).tzinfo is not None


async def test_event_names_are_unique(kmock, make_client):
    """Two events in a row get two names (the second is not a 409)."""
    add_pod(kmock)
    reporter = PodReporter("ml", "server-0", client=make_client(kmock_url(kmock)))
    assert await reporter.event("ModelFlipped", "8 -> 9")
    assert await reporter.event("ModelRolledBack", "9 -> 8")
    names = {r.data["metadata"]["name"] for r in kmock if r.method.value == "POST"}
    assert len(names) == 2


async def test_annotate_removes_seen_at_when_never_seen(kmock, make_client):
    """A pointer never confirmed by a registry removes registry-seen-at (merge-patch null)."""
    add_pod(kmock)
    kmock.objects["v1/pods", "ml", "server-0"]["metadata"]["annotations"][
        "pointercache.dev/registry-seen-at"
    ] = "2025-12-31T00:00:00Z"
    reporter = PodReporter("ml", "server-0", client=make_client(kmock_url(kmock)))
    assert await reporter.annotate(pointer(seen=None), ["9"])
    patch = next(r for r in kmock if r.method.value == "PATCH")
    assert patch.data["metadata"]["annotations"]["pointercache.dev/registry-seen-at"] is None
    notes = kmock.objects["v1/pods", "ml", "server-0"]["metadata"]["annotations"]
    assert "pointercache.dev/registry-seen-at" not in notes


async def test_annotate_says_what_the_model_container_loaded(kmock, make_client):
    """With a load known, pointercache.dev/loaded holds it as JSON that reads back; a new load
    is sent at once (it is not throttled like registry-seen-at)."""
    add_pod(kmock)
    reporter = PodReporter("ml", "server-0", client=make_client(kmock_url(kmock)), seen_every=3600)
    old = Loaded("8", "sha256:" + "12" * 32, Via.ACK, "2026-01-01T00:00:00.000Z")
    assert await reporter.annotate(pointer(), ["8", "9"], old)
    new = Loaded("9", DIGEST, Via.HOOK, "2026-01-01T00:00:05.000Z")
    assert await reporter.annotate(pointer(), ["8", "9"], new)
    notes = kmock.objects["v1/pods", "ml", "server-0"]["metadata"]["annotations"]
    assert Loaded.parse(notes[LOADED]) == new


async def test_a_failed_reload_is_a_warning_event(kmock, make_client):
    """The reporter turns a reload-failed happening into a ReloadFailed Warning on the pod."""
    add_pod(kmock)
    pod = PodReporter("ml", "server-0", client=make_client(kmock_url(kmock)))
    reporter = KubeReporter(pod=pod, cluster=None)
    await reporter.report(
        Happening.RELOAD_FAILED, pointer(), "version 9 not loaded: HTTP 500", ["9"]
    )
    posts = [r.data for r in kmock if r.method.value == "POST"]
    assert [(e["reason"], e["type"]) for e in posts] == [("ReloadFailed", "Warning")]
    assert posts[0]["message"] == "version 9 not loaded: HTTP 500"
