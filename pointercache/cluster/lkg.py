"""Cluster last-known-good: a ConfigMap that sidecars keep at the newest verified pointer.

Layout: data key ``layout.lkg_entry(model, selector)`` (``recommender.alias-production.json``)
holds a pointer document (``pointer.json``, schema 1), so one ConfigMap serves several models and
selectors, and a canary never overwrites production's entry. Sidecars write it through the API
with optimistic concurrency: read, compare, then replace with the read
``metadata.resourceVersion``; a 409 means another writer got there first, so the writer reads
again and decides again. ``model.revision.may_replace`` decides: a higher claim of the same
registry is left alone unless the writer accepted the lower answer after its grace period. The
ConfigMap is created on 404. Keys of earlier releases (``<model>.json``) are left in place.

Init containers read it from an ``optional: true`` ConfigMap volume
(``pointercache.volume.lkg.read_mounted``), so no API
call sits on the startup path; the kubelet refreshes the volume within its sync period (about a
minute).
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from pointercache.adapters.kube.client import KubeClient
from pointercache.adapters.retry import Backoff, retrying
from pointercache.base.log import log
from pointercache.errors import InvalidPointer, KubeConflict, KubeNotFound
from pointercache.model.candidate import Selector
from pointercache.model.pointer import Pointer
from pointercache.model.revision import may_replace
from pointercache.volume import layout

Outcome = Literal["created", "written", "unchanged", "kept-newer"]
MANAGED_BY = {"app.kubernetes.io/managed-by": "pointercache"}


def _stored(obj: dict[str, Any], model: str, selector: Selector) -> Pointer | None:
    text = (obj.get("data") or {}).get(layout.lkg_entry(model, selector))
    if not isinstance(text, str):
        return None
    try:
        pointer = Pointer.from_json(text)
    except InvalidPointer as exc:
        log.warning("lkg-cluster-invalid", model=model, error=exc)
        return None
    return pointer if pointer.model == model else None


class ClusterLKG:
    """Writer (and API reader) of the cluster LKG ConfigMap ``namespace/name``."""

    def __init__(
        self, namespace: str, name: str, *, client: KubeClient, max_attempts: int = 12
    ) -> None:
        self.namespace, self.name = namespace, name
        self._client = client
        self._max_attempts = max_attempts

    def read(self, model: str, selector: Selector) -> Pointer | None:
        """GET the ConfigMap; the stored pointer of (``model``, ``selector``), None if absent."""
        try:
            obj = self._client.get_configmap(self.namespace, self.name)
        except KubeNotFound:
            return None
        return _stored(obj, model, selector)

    def write(
        self, pointer: Pointer, selector: Selector, *, accepted_lower: bool = False
    ) -> Outcome:
        """Store ``pointer`` under its selector's key unless ``may_replace`` keeps what is
        stored; retry on 409 after a re-read.

        ``accepted_lower``: the writer accepted this answer although it is below the claim it
        held (after the grace period), so a higher stored claim of the same registry gives way.
        Blocking. Raises ``KubeConflict`` after ``max_attempts`` lost races, other ``KubeError``
        subclasses as they come.
        """
        backoff = Backoff(attempts=self._max_attempts, initial=0.01, maximum=0.64)
        try:
            for attempt in retrying(backoff, retry_on=lambda e: isinstance(e, KubeConflict)):
                with attempt:
                    return self._write_once(pointer, selector, accepted_lower)
        except KubeConflict:
            raise KubeConflict(
                f"cluster LKG {self.namespace}/{self.name}: gave up after "
                f"{self._max_attempts} conflicting writes",
                409,
            ) from None
        raise AssertionError("unreachable")  # pragma: no cover - retrying re-raises

    def _write_once(self, pointer: Pointer, selector: Selector, accepted_lower: bool) -> Outcome:
        """Read, decide, write; ``KubeConflict`` when another writer got there first."""
        key = layout.lkg_entry(pointer.model, selector)
        try:
            obj = self._client.get_configmap(self.namespace, self.name)
        except KubeNotFound:
            self._create(key, pointer)  # KubeConflict: created meanwhile; read it again
            return "created"
        stored = _stored(obj, pointer.model, selector)
        if stored is not None and not may_replace(
            stored, pointer, shared=True, accepted_lower=accepted_lower
        ):
            return "kept-newer"
        if stored is not None and _same(stored, pointer):
            return "unchanged"
        self._replace(obj, key, pointer)
        return "written"

    async def awrite(
        self, pointer: Pointer, selector: Selector, *, accepted_lower: bool = False
    ) -> Outcome | None:
        """``write`` in a thread for the refresh loop: failures are logged, never raised."""
        try:
            outcome = await asyncio.to_thread(
                self.write, pointer, selector, accepted_lower=accepted_lower
            )
        except Exception as exc:
            log.warning(
                "lkg-cluster-write-failed",
                configmap=f"{self.namespace}/{self.name}",
                model=pointer.model,
                version=pointer.version,
                error=exc,
            )
            return None
        log.info(
            "lkg-cluster-write",
            configmap=f"{self.namespace}/{self.name}",
            model=pointer.model,
            selector=str(selector),
            version=pointer.version,
            revision=pointer.revision,
            outcome=outcome,
        )
        return outcome

    def _create(self, key: str, pointer: Pointer) -> None:
        self._client.create_configmap(
            self.namespace,
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": self.name, "namespace": self.namespace, "labels": MANAGED_BY},
                "data": {key: pointer.to_json().decode()},
            },
        )

    def _replace(self, obj: dict[str, Any], key: str, pointer: Pointer) -> None:
        meta = obj.get("metadata") or {}
        body = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                k: meta[k]
                for k in ("name", "namespace", "labels", "annotations", "resourceVersion")
                if k in meta
            },
            "data": {**(obj.get("data") or {}), key: pointer.to_json().decode()},
        }
        if obj.get("binaryData"):
            body["binaryData"] = obj["binaryData"]
        self._client.replace_configmap(self.namespace, self.name, body)


def _same(a: Pointer, b: Pointer) -> bool:
    return (a.version, a.digest, a.revision, a.uri) == (b.version, b.digest, b.revision, b.uri)
