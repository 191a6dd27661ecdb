"""Registrars for manifest registries: ``file://``, ``s3://`` and ``configmap://``.

Each one reads the manifest, applies ``pointercache.publish.edit.apply`` and writes it back with
optimistic concurrency, so two publishers never lose each other's update:

- ``file:///path/m.json``: an exclusive ``flock`` on ``.<name>.lock`` beside the manifest for
  the read-modify-write, then an atomic replace (temp file, fsync, rename, fsync directory).
  Readers (the file source, kubelet-style watchers) never see a torn file. Every writer takes
  the lock: ``pointercache publish`` and ``pointercache promote`` do.
- ``s3://bucket/key.json``: GET with its ETag, then PutObject with ``If-Match: <ETag>`` (or
  ``If-None-Match: *`` to create). Before the first write the store is probed once for
  conditional-write support; a store that ignores the headers gets no write (``UnsafeRegistry``).
- ``configmap://namespace/name``: GET, then PUT with ``metadata.resourceVersion`` (the API server
  answers 409 if the object moved on; https://kubernetes.io/docs/reference/using-api/api-concepts/
  #resource-versions), or POST when the ConfigMap does not exist. The manifest is the data key
  ``<model>.json`` (or ``manifest.json`` when that is where the model's manifest already is).

A lost race (``ConcurrentUpdate``, ``KubeConflict``) is retried at once with a short jittered
backoff (``pointercache.adapters.retry``) and a fresh read; still losing after ``CAS_ATTEMPTS``
leaves a ``ConcurrentUpdate`` for the drainer to retry later. Blocking clients run in a thread.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from pointercache.adapters import s3
from pointercache.adapters.http import SOURCE
from pointercache.adapters.kube.client import KubeClient, api
from pointercache.adapters.retry import Backoff, retrying
from pointercache.base.redact import redact_uri
from pointercache.errors import (
    ConcurrentUpdate,
    InvalidManifest,
    KubeConflict,
    KubeNotFound,
    SourceUnavailable,
    TooLarge,
    UnsafeRegistry,
)
from pointercache.model.uris import configmap_ref, file_path
from pointercache.publish.edit import apply
from pointercache.publish.registration import Receipt, Registration
from pointercache.resolve.sources import SourceOptions
from pointercache.resolve.sources.configmap import SINGLE_KEY
from pointercache.volume import layout
from pointercache.volume.fsutil import LockBusy, atomic_write_bytes, held, lock_beside

CAS_ATTEMPTS = 8
"""Read-modify-write rounds one registration may lose to other writers before giving up."""


CAS_BACKOFF = Backoff(attempts=CAS_ATTEMPTS, initial=0.01, maximum=0.5)


def _cas_retry(on: type[Exception]) -> Any:
    return retrying(CAS_BACKOFF, retry_on=lambda exc: isinstance(exc, on))


class FileRegistrar:
    """A manifest file, changed under an ``flock``; implements ``Registrar``."""

    def __init__(self, uri: str, options: SourceOptions | None = None) -> None:
        self.options = options or SourceOptions()
        self.path = file_path(uri)
        self.name = redact_uri(uri)
        self.lock_path = lock_beside(self.path)

    def _read(self) -> bytes | None:
        try:
            with self.path.open("rb") as fh:
                return fh.read(self.options.max_manifest_bytes + 1)
        except FileNotFoundError:
            return None

    def _register(self, registration: Registration) -> Receipt:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with held(self.lock_path, timeout=self.options.timeout):
                data, receipt = apply(
                    self._read(), registration, max_bytes=self.options.max_manifest_bytes
                )
                if data is not None:
                    atomic_write_bytes(self.path, data)
        except LockBusy as exc:
            raise ConcurrentUpdate(f"{self.name}: locked by pid {exc.holder}") from exc
        return receipt

    async def register(self, registration: Registration) -> Receipt:
        """Lock, read, apply, replace atomically; OS errors are ``SourceUnavailable``."""
        try:
            return await asyncio.to_thread(self._register, registration)
        except OSError as exc:
            raise SourceUnavailable(f"{self.name}: {exc.strerror or type(exc).__name__}") from exc

    async def aclose(self) -> None:
        """Nothing to release."""


class S3Registrar:
    """A manifest object in S3, changed with conditional writes; implements ``Registrar``."""

    def __init__(self, uri: str, options: SourceOptions | None = None) -> None:
        self.options = options or SourceOptions()
        self.name = redact_uri(uri)
        self.bucket, self.key = s3.parse_manifest_uri(uri, "--registry")
        self._client: Any = None
        self._lock = threading.Lock()
        self._conditional: bool | None = None

    def _s3(self) -> Any:
        with self._lock:
            if self._client is None:
                timeout = max(self.options.timeout, 0.1)
                self._client = s3.client(
                    endpoint_url=self.options.s3_endpoint_url,
                    connect_timeout=timeout,
                    read_timeout=timeout,
                    max_attempts=1,
                    max_pool=2,
                )
            return self._client

    def _check_conditional(self, client: Any) -> None:
        if self._conditional is None:
            self._conditional = s3.conditional_writes_supported(client, self.bucket, self.key)
        if not self._conditional:
            raise UnsafeRegistry(
                f"{self.name}: the store ignores conditional writes (If-None-Match); refusing"
                " to overwrite the manifest blindly"
            )

    def _register(self, registration: Registration) -> Receipt:
        client = self._s3()
        limit = self.options.max_manifest_bytes
        for attempt in _cas_retry(ConcurrentUpdate):
            with attempt:
                current, etag = s3.get_object_with_etag(client, self.bucket, self.key, limit)
                data, receipt = apply(current, registration, max_bytes=limit)
                if data is not None:
                    self._check_conditional(client)
                    s3.put_object_conditional(client, self.bucket, self.key, data, etag=etag)
                return receipt
        raise AssertionError("unreachable")  # pragma: no cover - tenacity re-raises

    async def register(self, registration: Registration) -> Receipt:
        """GET with ETag, apply, conditional PUT (retried on a lost race), in a thread."""
        try:
            return await asyncio.to_thread(self._register, registration)
        except TooLarge as exc:
            raise InvalidManifest(f"{self.name}: {exc}") from exc
        except Exception as exc:
            raise s3.translate(exc, self.name, SOURCE) from exc

    async def aclose(self) -> None:
        """Drop the client."""
        client, self._client = self._client, None
        if client is not None:
            await asyncio.to_thread(client.close)


class ConfigMapRegistrar:
    """A manifest in a ConfigMap, replaced with its resourceVersion; implements ``Registrar``.

    The API client is built from ``options.kube``, else it is the process-wide ``api()`` one.
    """

    def __init__(self, uri: str, options: SourceOptions | None = None) -> None:
        self.options = options or SourceOptions()
        self.namespace, self.configmap = configmap_ref(uri)
        self.name = f"configmap://{self.namespace}/{self.configmap}"
        kube = self.options.kube
        self._client = KubeClient(kube) if kube is not None else api()
        self._owns_client = kube is not None

    def _data_key(self, obj: dict[str, Any] | None, model: str) -> str:
        data = (obj or {}).get("data") or {}
        own = f"{layout.disk_name(model)}.json"  # the key ConfigMapSource reads
        return SINGLE_KEY if own not in data and SINGLE_KEY in data else own

    def _attempt(self, registration: Registration) -> Receipt:
        try:
            obj: dict[str, Any] | None = self._client.get_configmap(self.namespace, self.configmap)
        except KubeNotFound:
            obj = None
        key = self._data_key(obj, registration.model)
        text = ((obj or {}).get("data") or {}).get(key)
        current = text.encode() if isinstance(text, str) else None
        limit = self.options.max_manifest_bytes
        data, receipt = apply(current, registration, max_bytes=limit)
        if data is None:
            return receipt
        if obj is None:
            body = {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": self.configmap, "namespace": self.namespace},
                "data": {key: data.decode()},
            }
            self._client.create_configmap(self.namespace, body)
        else:
            meta = obj.get("metadata") or {}
            body = {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {**meta, "resourceVersion": meta.get("resourceVersion")},
                "data": {**(obj.get("data") or {}), key: data.decode()},
            }
            self._client.replace_configmap(self.namespace, self.configmap, body)
        return receipt

    def _register(self, registration: Registration) -> Receipt:
        for attempt in _cas_retry(KubeConflict):
            with attempt:
                return self._attempt(registration)
        raise AssertionError("unreachable")  # pragma: no cover - tenacity re-raises

    async def register(self, registration: Registration) -> Receipt:
        """GET, apply, replace with resourceVersion (retried on 409), in a thread."""
        try:
            return await asyncio.to_thread(self._register, registration)
        except KubeConflict as exc:
            raise ConcurrentUpdate(f"{self.name}: {exc}") from exc

    async def aclose(self) -> None:
        """Close the API client's connections (if it is this registrar's own)."""
        if self._owns_client:
            await asyncio.to_thread(self._client.close)
