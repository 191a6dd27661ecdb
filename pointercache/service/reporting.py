"""Tell the cluster what the sidecar did: cluster LKG, pod annotations, Events.

The refresher calls ``Reporter.report`` after each publication or refused flip. Everything here
is best effort: a reporting failure is logged by the adapter and never reaches the refresh loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

from pointercache.cluster import pods
from pointercache.model.candidate import DEFAULT_SELECTOR, Selector
from pointercache.model.loaded import Loaded
from pointercache.model.pointer import Pointer
from pointercache.service.state import Happening

if TYPE_CHECKING:
    from pointercache.adapters.kube.config import KubeConfig
    from pointercache.cluster.lkg import ClusterLKG
    from pointercache.cluster.pods import PodReporter


class Reporter(Protocol):
    """Receives what the refresher did."""

    async def report(
        self,
        happening: Happening,
        pointer: Pointer | None,
        message: str,
        staged: Sequence[str],
        loaded: Loaded | None = None,
    ) -> None:
        """Record ``happening`` (``loaded``: what the model container serves); never raise."""
        ...


@dataclass(frozen=True, slots=True)
class ReportOptions:
    """Where the sidecar reports (built by the entrypoint from its settings)."""

    pod: tuple[str, str] | None = None
    """(namespace, name) of this pod to annotate and attach Events to, or None."""
    cluster_lkg: tuple[str, str] | None = None
    """(namespace, name) of the cluster LKG ConfigMap to keep current, or None."""
    selector: Selector = DEFAULT_SELECTOR
    """The pod's selector (``--selector``): the cluster LKG entry it writes is this selector's."""

    @property
    def enabled(self) -> bool:
        """True if anything is reported at all."""
        return self.pod is not None or self.cluster_lkg is not None


_EVENTS: dict[Happening, tuple[str, Literal["Normal", "Warning"]]] = {
    Happening.FLIPPED: (pods.REASON_FLIPPED, "Normal"),
    Happening.ROLLBACK: (pods.REASON_ROLLED_BACK, "Normal"),
    Happening.BLOCKED: (pods.REASON_FLIP_BLOCKED, "Warning"),
    Happening.FALLBACK: (pods.REASON_FALLBACK, "Warning"),
    Happening.STALE_ANSWER: (pods.REASON_STALE_ANSWER, "Warning"),
    Happening.REVISION_RESET: (pods.REASON_REVISION_RESET, "Warning"),
    Happening.RELOAD_FAILED: (pods.REASON_RELOAD_FAILED, "Warning"),
}
"""Happenings that become a Kubernetes Event on the pod: (reason, type)."""
_LOAD_HAPPENINGS = frozenset({Happening.LOADED, Happening.RELOAD_FAILED})
"""What the model container did: reported on the pod, never mirrored to the cluster LKG."""


class KubeReporter:
    """Keeps the cluster LKG ConfigMap, this pod's annotations and its Events current."""

    def __init__(
        self,
        *,
        pod: PodReporter | None,
        cluster: ClusterLKG | None,
        selector: Selector = DEFAULT_SELECTOR,
    ) -> None:
        self.pod = pod
        self.cluster = cluster
        self.selector = selector

    @classmethod
    def build(cls, options: ReportOptions, kube: KubeConfig | None) -> KubeReporter | None:
        """The reporter the options ask for, or None (no Kubernetes calls at all)."""
        if not options.enabled:
            return None
        from pointercache.adapters.kube.client import api
        from pointercache.cluster.lkg import ClusterLKG
        from pointercache.cluster.pods import PodReporter

        client = api(kube)
        pod = None
        if options.pod is not None:
            namespace, name = options.pod
            pod = PodReporter(namespace, name, client=client)
        cluster = None
        if options.cluster_lkg is not None:
            namespace, name = options.cluster_lkg
            cluster = ClusterLKG(namespace, name, client=client)
        return cls(pod=pod, cluster=cluster, selector=options.selector)

    async def report(
        self,
        happening: Happening,
        pointer: Pointer | None,
        message: str,
        staged: Sequence[str],
        loaded: Loaded | None = None,
    ) -> None:
        """Mirror registry-confirmed pointers, annotate the pod, and emit an Event.

        A pointer accepted below the claim the sidecar held (``REVISION_RESET``) overwrites a
        higher cluster LKG claim of the same registry; any other keeps it. A load changes
        nothing the LKG holds and is not mirrored.
        """
        mirror = happening not in _LOAD_HAPPENINGS
        if mirror and self.cluster is not None and pointer and pointer.source == "registry":
            reset = happening is Happening.REVISION_RESET
            await self.cluster.awrite(pointer, self.selector, accepted_lower=reset)
        if self.pod is None:
            return
        if pointer is not None:
            await self.pod.annotate(pointer, staged, loaded)
        if happening in _EVENTS:
            reason, kind = _EVENTS[happening]
            await self.pod.event(reason, message, kind)
