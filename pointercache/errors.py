"""One exception tree for pointercache.

::

    PointercacheError
    ├── ConfigError ........................ bad settings; exit 2, never retried
    ├── SourceError ........................ a registry could not give an answer
    │   ├── SourceUnavailable (Transient) .. timeout, refused, 5xx, throttled
    │   ├── NotFound ....................... unknown model, alias, version or stage
    │   └── InvalidManifest ................ malformed, wrong-typed, oversized, wrong model
    ├── FetchError ......................... an artifact could not be staged
    │   ├── FetchUnavailable (Transient) ... timeout, refused, 5xx, broken body
    │   │   └── Stalled .................... slower than the minimum rate, or past its cap
    │   ├── ArtifactNotFound ............... 404, missing key or path
    │   ├── ForbiddenURI ................... not allowlisted, traversal, metadata address
    │   ├── UnsafeArchive .................. an archive breaks the extraction rules
    │   └── TooLarge ....................... over a configured size limit
    ├── IntegrityError ..................... digest or size differs from what was promised
    ├── SignatureMismatch .................. the model's inputs do not fit the serving code
    ├── StoreError ......................... the shared volume could not be changed safely
    │   ├── StoreLocked .................... another writer holds the volume (or a node lock)
    │   ├── InvalidPointer ................. a pointer.json that does not validate
    │   └── UnsafeNodeFile ................. a node-directory file that is not a small regular file
    ├── KubeError .......................... a Kubernetes API call failed (adapters.kube)
    │   ├── KubeUnavailable (Transient) .... timeout, refused, 5xx, 429
    │   ├── KubeNotFound ................... 404: no such object
    │   ├── KubeConflict ................... 409: changed or created meanwhile; re-read, retry
    │   └── KubeForbidden .................. 401/403: missing RBAC or credentials
    ├── LoadError .......................... what the model container loaded is unknown or refused
    │   ├── InvalidAck ..................... a malformed load acknowledgement (HTTP 400)
    │   ├── NotStaged ...................... acknowledged version not on the volume (409)
    │   ├── AckUnavailable (Transient) ..... the sidecar could not be reached to acknowledge
    │   ├── HookUnavailable (Transient) .... the model server's hook timed out, refused, 5xx, 429
    │   └── HookFailed ..................... the hook refused (4xx, 3xx) or the reload gave up
    ├── ResolutionFailed ................... no step of the chain produced a servable model
    └── PublishError ....................... a registration could not be queued or applied
        ├── OutboxError .................... the outbox file cannot be created, written or read
        ├── RegistrationConflict ........... the registry holds another artifact under that version
        ├── ConcurrentUpdate (Transient) ... another writer changed the manifest meanwhile
        └── UnsafeRegistry ................. the registry cannot refuse a blind overwrite

``Transient`` is a marker base: retry code asks ``isinstance(exc, Transient)`` and nothing else.
Adapters translate library errors where they meet the library (``raise ... from exc``), by status
or error code, never by matching message text.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class PointercacheError(Exception):
    """Base of every error pointercache raises on purpose."""


class Transient(PointercacheError):
    """Marker: the same call may succeed later (retry with backoff)."""


class ConfigError(PointercacheError):
    """A setting is missing, malformed or contradictory. Exit 2; never retried."""


class SourceError(PointercacheError):
    """A registry source could not produce a candidate."""


class SourceUnavailable(SourceError, Transient):
    """The registry did not answer in time, refused, or failed on its side (5xx)."""


class NotFound(SourceError):
    """The registry answered, but has no such model, alias, version or stage."""


class InvalidManifest(SourceError):
    """The registry's answer is malformed, wrong-typed, oversized or for another model."""


class FetchError(PointercacheError):
    """An artifact could not be fetched into staging."""


class FetchUnavailable(FetchError, Transient):
    """The artifact store did not answer in time, refused, or broke the transfer."""


class Stalled(FetchUnavailable):
    """A transfer went slower than its minimum rate, or past the cap derived from its size.

    Transient like any broken transfer; ``adapters.pace`` raises it.
    """


class ArtifactNotFound(FetchError):
    """The artifact does not exist at its URI."""


class ForbiddenURI(FetchError):
    """The URI is not allowlisted, escapes its root, or targets a forbidden address."""


class UnsafeArchive(FetchError):
    """An archive entry breaks the extraction rules (traversal, links, devices, limits)."""


class TooLarge(FetchError):
    """A body, file or archive is over a configured size limit."""


class IntegrityError(PointercacheError):
    """The staged artifact's digest or size differs from what the source promised."""


class SignatureMismatch(PointercacheError):
    """The model's input signature is not compatible with what the serving code produces."""

    def __init__(self, message: str, diff: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.diff: dict[str, Any] = diff or {}


class StoreError(PointercacheError):
    """The shared volume could not be changed safely; what was published stays as it was."""


class StoreLocked(StoreError):
    """Another process holds the single-writer lock of the shared volume."""


class InvalidPointer(StoreError):
    """A pointer document does not validate; the message names the field."""


class UnsafeNodeFile(StoreError):
    """A file in the node directory is a link, FIFO, device or directory, or is over its bound.

    The node directory (``--lkg-dir``) is shared by every pod on the node and untrusted: such a
    file is skipped with this reason, never followed or waited on (``volume.nodefile``).
    """


class KubeError(PointercacheError):
    """A Kubernetes API call failed; ``status`` is the HTTP status (0 without a response)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class KubeUnavailable(KubeError, Transient):
    """The API server did not answer in time, refused, throttled (429) or failed (5xx)."""


class KubeNotFound(KubeError):
    """404: the object (or its namespace) does not exist."""


class KubeConflict(KubeError):
    """409: the object changed (stale resourceVersion) or already exists; re-read and retry."""


class KubeForbidden(KubeError):
    """401/403: the service account lacks a role binding, or the credentials are wrong."""


class LoadError(PointercacheError):
    """A load acknowledgement was refused, or a reload of the model server failed."""


class InvalidAck(LoadError):
    """A load acknowledgement is malformed (not JSON, wrong types, oversized)."""


class NotStaged(LoadError):
    """A load acknowledgement names a version and digest that is not staged on the volume."""


class AckUnavailable(LoadError, Transient):
    """The sidecar did not answer an acknowledgement (not listening yet, timeout, 5xx)."""


class HookUnavailable(LoadError, Transient):
    """A reload hook or the loaded probe did not answer in time, refused, or answered 5xx/429."""


class HookFailed(LoadError):
    """A reload hook refused the reload (4xx, a redirect), or the reload gave up."""


class ResolutionFailed(PointercacheError):
    """No step of the resolution chain produced a servable, verified model."""

    def __init__(self, message: str, attempts: Sequence[Any] = ()) -> None:
        super().__init__(message)
        self.attempts = tuple(attempts)


class PublishError(PointercacheError):
    """A registration (``pointercache publish``) could not be queued or applied."""


class OutboxError(PublishError):
    """The outbox file cannot be created, written or read (full disk, read-only, corrupt)."""


class RegistrationConflict(PublishError):
    """The registry already holds a *different* artifact under that version; never retried."""


class ConcurrentUpdate(PublishError, Transient):
    """Another writer changed the manifest between our read and our conditional write."""


class UnsafeRegistry(PublishError):
    """The registry ignores conditional writes, so a write could silently lose another one."""
