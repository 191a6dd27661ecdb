"""Tell the cluster what the sidecar did: cluster LKG, pod annotations, Events.

The refresher calls ``Reporter.report`` after each publication or refused flip. Everything here
is best effort: a reporting failure is logged by the adapter and never reaches the refresh loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from pointercache.model.pointer import Pointer

if TYPE_CHECKING:
    from pointercache.adapters.kube.client import KubeConfig
    from pointercache.cluster.lkg import ClusterLKG
    from pointercache.cluster.pods import PodReporter
    from pointercache.sync.settings import Settings

Event = str
"""``flipped``, ``rollback``, ``confirmed``, ``fallback`` or ``blocked``."""


class Reporter(Protocol):
    """Receives what the refresher did."""

    async def report(
        self, event: Event, pointer: Pointer | None, message: str, staged: Sequence[str]
    ) -> None:
        """Record ``event``; never raise."""
        ...


class KubeReporter:
    """Keeps the cluster LKG ConfigMap, this pod's annotations and its Events current."""

    def __init__(self, *, pod: PodReporter | None, cluster: ClusterLKG | None) -> None:
        self.pod = pod
        self.cluster = cluster

    @classmethod
    def from_settings(cls, settings: Settings, kube: KubeConfig | None) -> KubeReporter | None:
        """The reporter the settings ask for, or None (no Kubernetes calls at all)."""
        if not (settings.report_to_pod or settings.lkg_configmap):
            return None
        from pointercache.adapters.kube.client import api
        from pointercache.cluster.lkg import ClusterLKG, parse_target
        from pointercache.cluster.pods import PodReporter

        client = api(kube)
        pod = None
        if settings.report_to_pod and settings.pod_name and settings.pod_namespace:
            pod = PodReporter(settings.pod_namespace, settings.pod_name, client=client)
        cluster = None
        if settings.lkg_configmap:
            namespace, name = parse_target(settings.lkg_configmap)
            cluster = ClusterLKG(namespace, name, client=client)
        return cls(pod=pod, cluster=cluster)

    async def report(
        self, event: Event, pointer: Pointer | None, message: str, staged: Sequence[str]
    ) -> None:
        """Mirror registry-confirmed pointers, annotate the pod, and emit an Event."""
        if self.cluster is not None and pointer is not None and pointer.source == "registry":
            await self.cluster.awrite(pointer)
        if self.pod is None:
            return
        from pointercache.cluster import pods as podinfo

        if pointer is not None:
            await self.pod.annotate(pointer, staged)
        reasons = {
            "flipped": (podinfo.REASON_FLIPPED, "Normal"),
            "rollback": (podinfo.REASON_ROLLED_BACK, "Normal"),
            "blocked": (podinfo.REASON_FLIP_BLOCKED, "Warning"),
            "fallback": (podinfo.REASON_FALLBACK, "Warning"),
        }
        if event in reasons:
            reason, kind = reasons[event]
            await self.pod.event(reason, message, "Warning" if kind == "Warning" else "Normal")
