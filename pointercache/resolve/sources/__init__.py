"""Registry sources: where the answer "which version should be served" comes from.

A source is chosen by the scheme of its URI from ``SOURCES`` (dotted paths, so a source's heavy
imports happen only when it is used). Every source implements ``Source``; those that can push
changes (a watched file, a ConfigMap watch) also implement ``WatchableSource``, and those that
keep a copy of their answer implement ``CachingSource`` so a forced refresh can bypass it.
A source whose registry refuses some names implements ``CheckingSource``: the wiring asks it
about the configured selectors at start-up, so a selector the registry can never answer is a
configuration error (exit 2), not a failure on every poll.
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable
from urllib.parse import urlsplit

from pointercache.adapters.http import Credentials
from pointercache.adapters.kube.config import KubeConfig
from pointercache.errors import ConfigError
from pointercache.model.candidate import Candidate, Selector

SOURCES: dict[str, str] = {
    "file": "pointercache.resolve.sources.file:FileManifestSource",
    "memory": "pointercache.resolve.sources.memory:MemorySource",
    "http": "pointercache.resolve.sources.http:HttpManifestSource",
    "https": "pointercache.resolve.sources.http:HttpManifestSource",
    "s3": "pointercache.resolve.sources.s3:S3ManifestSource",
    "mlflow+http": "pointercache.resolve.sources.mlflow:MlflowSource",
    "mlflow+https": "pointercache.resolve.sources.mlflow:MlflowSource",
    "configmap": "pointercache.resolve.sources.configmap:ConfigMapSource",
}
"""URI scheme → ``module:Class`` of the source that serves it."""


@dataclass(frozen=True, slots=True)
class SourceOptions:
    """Settings every source may use; built once by the entrypoint."""

    timeout: float = 0.5
    """Seconds one resolution may take before the source counts as unavailable."""
    max_manifest_bytes: int = 1 << 20
    """Manifests larger than this are rejected (1 MiB)."""
    credentials: Credentials = field(default_factory=Credentials)
    """The registry's secret files (bearer token or ``user:password``), read on each use."""
    kube: KubeConfig | None = None
    """How ``configmap://`` sources reach the API server (None: the process-wide client)."""
    s3_endpoint_url: str | None = None
    """Endpoint of an S3-compatible store for ``s3://`` manifests (None: boto3's default,
    which honours ``AWS_ENDPOINT_URL``)."""
    file_resync: float = 30.0
    """Seconds between re-reads of a watched ``file://`` manifest when no event arrives."""


class Source(Protocol):
    """Answers "which version of MODEL does SELECTOR name" with a ``Candidate``."""

    name: str
    """Redacted URI, safe to log and show."""

    async def resolve(self, model: str, selector: Selector) -> Candidate:
        """Return the candidate or raise a ``SourceError`` (never a library exception)."""
        ...

    async def aclose(self) -> None:
        """Release connections and watches."""
        ...


@runtime_checkable
class WatchableSource(Protocol):
    """A source that can tell when its answer may have changed (events, not polls)."""

    def changes(self) -> AsyncIterator[None]:
        """Yield once each time the answer may have changed; the caller re-resolves."""
        ...


@runtime_checkable
class CachingSource(Protocol):
    """A source that keeps a copy of its answer (ETag, watched object) between resolutions."""

    def invalidate(self) -> None:
        """Make the next resolve ask the origin itself (``POST /refresh``)."""
        ...


@runtime_checkable
class CheckingSource(Protocol):
    """A source that can tell, without a request, that its registry refuses a selector."""

    def check_selector(self, selector: Selector) -> None:
        """Raise ``ConfigError`` if the registry can never answer ``selector``."""
        ...


def open_source(uri: str, options: SourceOptions | None = None) -> Source:
    """Build the source for ``uri`` from the scheme table; ``ConfigError`` if unknown."""
    scheme = urlsplit(uri).scheme.lower()
    target = SOURCES.get(scheme)
    if target is None:
        known = ", ".join(sorted(SOURCES))
        raise ConfigError(f"registry {uri!r}: unsupported scheme {scheme!r} (one of: {known})")
    module_name, _, class_name = target.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    source: Source = cls(uri, options or SourceOptions())
    return source
