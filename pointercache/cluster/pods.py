"""What the sidecar tells Kubernetes about its pod: ``pointercache.dev/*`` annotations and Events.

Annotations (a JSON merge-patch of the pod, read by ``pointercache fleet``):

- ``pointercache.dev/version``: the served version;
- ``pointercache.dev/digest``: its ``sha256:<hex>`` digest;
- ``pointercache.dev/source``: which step of the chain answered (registry, lkg-node, ...);
- ``pointercache.dev/staged``: comma-separated versions staged on the shared volume (current
  included), which two-phase promotion waits for;
- ``pointercache.dev/registry-seen-at``: when a registry last confirmed the served version
  (removed while no registry ever has);
- ``pointercache.dev/loaded``: what the model container has loaded, as compact JSON
  ``{"at": ..., "digest": "sha256:...", "version": "8", "via": "ack"}`` (``model.loaded.Loaded``;
  absent until the model container reports a load).

An identical patch is not sent again; a patch that would only move ``registry-seen-at`` is sent at
most every ``seen_every`` seconds (60 by default), so a fleet of pods polling every 15 s does not
write to the API server every 15 s.

Events are core/v1 Events (``kubectl describe pod`` and ``kubectl get events`` show them) whose
``involvedObject`` is the pod, on fallback, blocked flip, flip and rollback. Reporting never raises
into the refresh loop: a failure is logged and the call returns False.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from pointercache.adapters.kube.client import KubeClient, api
from pointercache.base.log import log
from pointercache.base.redact import redact_text
from pointercache.model.loaded import Loaded
from pointercache.model.pointer import Pointer

PREFIX = "pointercache.dev/"
VERSION, DIGEST, SOURCE, STAGED, SEEN, LOADED = (
    PREFIX + "version",
    PREFIX + "digest",
    PREFIX + "source",
    PREFIX + "staged",
    PREFIX + "registry-seen-at",
    PREFIX + "loaded",
)
COMPONENT = "pointercache"

REASON_FALLBACK = "RegistryFallback"
"""Warning: the registry did not answer; the model came from an LKG or the pinned version."""
REASON_FLIP_BLOCKED = "FlipBlocked"
"""Warning: a new version was not flipped to (signature mismatch, integrity, fetch failure)."""
REASON_FLIPPED = "ModelFlipped"
"""Normal: a new version is now served."""
REASON_ROLLED_BACK = "ModelRolledBack"
"""Normal: an older version (lower than the one served) is now served."""
REASON_STALE_ANSWER = "StaleAnswer"
"""Warning: a registry answered a revision below the one it claimed for the served version;
the answer is refused until the grace period ends."""
REASON_REVISION_RESET = "RevisionReset"
"""Warning: a registry kept answering a lower revision for the whole grace period; its answer
was accepted (its counter went back)."""
REASON_RELOAD_FAILED = "ReloadFailed"
"""Warning: the model container did not load a flipped version (hook refused, or timed out)."""

EventType = Literal["Normal", "Warning"]
MAX_MESSAGE = 1024
_counter = itertools.count()


def annotations_for(
    pointer: Pointer, staged: Sequence[str], loaded: Loaded | None = None
) -> dict[str, str | None]:
    """The ``pointercache.dev/*`` annotations for ``pointer`` (None: remove the annotation)."""
    return {
        VERSION: pointer.version,
        DIGEST: pointer.digest,
        SOURCE: pointer.source,
        STAGED: ",".join(sorted(set(staged), key=_version_key)),
        SEEN: pointer.registry_seen_at,
        LOADED: loaded.to_json() if loaded is not None else None,
    }


def _version_key(version: str) -> tuple[int, int | str]:
    return (0, int(version)) if version.isdigit() else (1, version)


class PodReporter:
    """Annotate this pod and record Events about it; blocking calls run in threads."""

    def __init__(
        self,
        namespace: str,
        pod_name: str,
        *,
        client: KubeClient | None = None,
        pod_uid: str | None = None,
        node_name: str | None = None,
        seen_every: float = 60.0,
    ) -> None:
        self.namespace, self.pod_name = namespace, pod_name
        self._client = client or api()
        self._pod_uid = pod_uid
        self._node_name = node_name
        self._seen_every = seen_every
        self._last: dict[str, str | None] | None = None
        self._last_at = 0.0

    def _due(self, wanted: dict[str, str | None]) -> bool:
        if self._last is None:
            return True
        moved = {k for k in wanted if wanted[k] != self._last.get(k)}
        if not moved:
            return False
        return moved != {SEEN} or time.monotonic() - self._last_at >= self._seen_every

    async def annotate(
        self, pointer: Pointer, staged: Sequence[str], loaded: Loaded | None = None
    ) -> bool:
        """Merge-patch the pod's annotations; return True if a patch was sent and accepted."""
        wanted = annotations_for(pointer, staged, loaded)
        if not self._due(wanted):
            return False
        patch = {"metadata": {"annotations": wanted}}
        try:
            await asyncio.to_thread(self._client.patch_pod, self.namespace, self.pod_name, patch)
        except Exception as exc:
            log.warning("pod-annotate-failed", pod=f"{self.namespace}/{self.pod_name}", error=exc)
            return False
        self._last, self._last_at = wanted, time.monotonic()
        return True

    def event_body(
        self,
        reason: str,
        message: str,
        type_: EventType = "Normal",
    ) -> dict[str, Any]:
        """The core/v1 Event sent by ``event`` (exposed for tests and documentation)."""
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")  # metav1.Time: seconds
        involved: dict[str, str] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "name": self.pod_name,
            "namespace": self.namespace,
        }
        if self._pod_uid:
            involved["uid"] = self._pod_uid
        source = {"component": COMPONENT}
        if self._node_name:
            source["host"] = self._node_name
        return {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{self.pod_name}.{time.time_ns():x}{next(_counter):x}",
                "namespace": self.namespace,
            },
            "involvedObject": involved,
            "reason": reason,
            "message": redact_text(message)[:MAX_MESSAGE],
            "type": type_,
            "source": source,
            "reportingComponent": COMPONENT,
            "reportingInstance": self.pod_name,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }

    async def event(self, reason: str, message: str, type_: EventType = "Normal") -> bool:
        """Record a core/v1 Event on this pod; return True if the API accepted it."""
        body = self.event_body(reason, message, type_)
        try:
            await asyncio.to_thread(self._client.create_event, self.namespace, body)
        except Exception as exc:
            log.warning(
                "pod-event-failed",
                pod=f"{self.namespace}/{self.pod_name}",
                reason=reason,
                error=exc,
            )
            return False
        return True
