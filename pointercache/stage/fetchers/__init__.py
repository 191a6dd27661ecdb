"""Artifact fetchers: bring the bytes a candidate names into a staging path.

A fetcher is chosen by URI scheme from ``FETCHERS`` (dotted paths, imported lazily). It writes a
single file or a directory tree at ``dest`` (which does not exist yet), and nothing outside it.
Verification (digest, size) and archive extraction happen in ``pointercache.stage.prestage``,
the same for every fetcher. URIs are untrusted: every fetcher calls ``options.allow.check(uri)``
first.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from pointercache.adapters.http import Credentials
from pointercache.adapters.pace import Pace
from pointercache.adapters.retry import Backoff
from pointercache.errors import ConfigError, ForbiddenURI
from pointercache.model.digest import FileHashes
from pointercache.stage.allow import AllowAll, AllowPolicy, split_uri

FETCHERS: dict[str, str] = {
    "file": "pointercache.stage.fetchers.file:FileFetcher",
    "memory": "pointercache.stage.fetchers.memory:MemoryFetcher",
    "http": "pointercache.stage.fetchers.http:HttpFetcher",
    "https": "pointercache.stage.fetchers.http:HttpFetcher",
    "s3": "pointercache.stage.fetchers.s3:S3Fetcher",
    "mlflow-artifacts+http": "pointercache.stage.fetchers.mlflow:MlflowArtifactFetcher",
    "mlflow-artifacts+https": "pointercache.stage.fetchers.mlflow:MlflowArtifactFetcher",
}
"""URI scheme → ``module:Class`` of the fetcher that serves it."""

Progress = Callable[[int, int | None], None]
"""Called with (bytes done, bytes total or None) as a transfer advances."""

Downloaded = Callable[[int, float], None]
"""Called with (bytes, seconds) when a download from the origin has finished."""


@dataclass(frozen=True, slots=True)
class FetchOptions:
    """Settings every fetcher may use; built once by the entrypoint."""

    allow: AllowPolicy = field(default_factory=AllowAll)
    """URI policy applied before any byte is requested."""
    max_bytes: int = 64 << 30
    """Refuse artifacts larger than this (64 GiB)."""
    connect_timeout: float = 5.0
    """Seconds to establish a connection."""
    read_timeout: float = 30.0
    """Seconds a single socket read may wait for a byte (a peer that sends nothing)."""
    pace: Pace = field(default_factory=Pace)
    """The minimum rate and the total cap every transfer keeps (a peer that trickles,
    ``adapters.pace``): 64 KiB/s over each 10 s window, and 10 s + size / 64 KiB/s in all."""
    backoff: Backoff = field(default_factory=Backoff)
    """Attempts per request, part (S3) or file (MLflow), and per stretch without progress
    (HTTP resume), with their jittered waits."""
    progress: Progress | None = None
    """Progress callback; the stage layer turns it into a log line every 10 s."""
    downloaded: Downloaded | None = None
    """Called by the stage layer after each finished download (the sidecar's metrics)."""
    mlflow_auth: dict[str, Credentials] = field(default_factory=dict)
    """MLflow tracking server netloc (host:port) → its credentials: the ``mlflow-artifacts``
    fetcher sends them to that netloc only (built by the wiring from the MLflow registries)."""


@dataclass(frozen=True, slots=True)
class FetchResult:
    """What a fetcher wrote at ``dest``."""

    is_dir: bool
    """True if ``dest`` is a directory tree, False for a single file."""
    size_bytes: int
    """Bytes written."""
    sha256: str | None = None
    """Hex digest computed while writing a single file, if the fetcher did (saves a re-read)."""
    files: FileHashes | None = None
    """For a directory: every file's sha256 and size computed while writing it (the tree digest
    is assembled from these instead of re-reading every byte); None if the fetcher did not."""


class Fetcher(Protocol):
    """Fetches one URI scheme."""

    async def fetch(self, uri: str, dest: Path) -> FetchResult:
        """Write the artifact at ``dest``; raise a ``FetchError`` (never a library exception)."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


def open_fetcher(uri: str, options: FetchOptions) -> Fetcher:
    """Build the fetcher for the scheme of ``uri``; ``ForbiddenURI`` if unknown or unparseable."""
    scheme = split_uri(uri).scheme.lower()
    target = FETCHERS.get(scheme)
    if target is None:
        raise ForbiddenURI(f"artifact scheme {scheme!r} is not supported")
    module_name, _, class_name = target.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except ImportError as exc:  # pragma: no cover - a packaging error
        raise ConfigError(f"fetcher for {scheme!r} cannot be loaded: {exc}") from exc
    fetcher: Fetcher = cls(options)
    return fetcher
