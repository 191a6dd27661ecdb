"""pointercache: make the model registry a soft dependency of every model-serving pod.

The public face of the package, for model containers and tools:

- ``pointercache.reader`` — ``current()``, ``wait()``, ``watch()``: read the published model
  from the shared volume (``Model``, also named ``LoadedModel``: its ``pointer`` and ``path``);
  ``acknowledge()``: tell the sidecar which one the model container has loaded;
- ``Pointer`` — the ``pointer.json`` document (schema 1);
- the error tree of ``pointercache.errors`` (``PointercacheError`` and its branches).

Everything else (the layered packages described in ``docs/architecture.md``) is the
implementation of the init container and the sidecar, and may change between releases.
"""

from __future__ import annotations

from pointercache import reader
from pointercache.errors import (
    AckUnavailable,
    ArtifactNotFound,
    ConfigError,
    FetchError,
    FetchUnavailable,
    ForbiddenURI,
    IntegrityError,
    InvalidAck,
    InvalidManifest,
    InvalidPointer,
    KubeConflict,
    KubeError,
    KubeForbidden,
    KubeNotFound,
    KubeUnavailable,
    LoadError,
    NotFound,
    NotStaged,
    PointercacheError,
    ResolutionFailed,
    SignatureMismatch,
    SourceError,
    SourceUnavailable,
    Stalled,
    StoreError,
    StoreLocked,
    TooLarge,
    Transient,
    UnsafeArchive,
    UnsafeNodeFile,
)
from pointercache.model.pointer import Pointer
from pointercache.reader import LoadedModel, Model, acknowledge, current, wait, watch

__all__ = [
    "AckUnavailable",
    "ArtifactNotFound",
    "ConfigError",
    "FetchError",
    "FetchUnavailable",
    "ForbiddenURI",
    "IntegrityError",
    "InvalidAck",
    "InvalidManifest",
    "InvalidPointer",
    "KubeConflict",
    "KubeError",
    "KubeForbidden",
    "KubeNotFound",
    "KubeUnavailable",
    "LoadError",
    "LoadedModel",
    "Model",
    "NotFound",
    "NotStaged",
    "Pointer",
    "PointercacheError",
    "ResolutionFailed",
    "SignatureMismatch",
    "SourceError",
    "SourceUnavailable",
    "Stalled",
    "StoreError",
    "StoreLocked",
    "TooLarge",
    "Transient",
    "UnsafeArchive",
    "UnsafeNodeFile",
    "acknowledge",
    "current",
    "reader",
    "wait",
    "watch",
]
