"""Registrars: one per registry kind, chosen by URI scheme from ``REGISTRARS``.

A registrar applies one ``Registration`` to its registry *idempotently*: it first looks for the
registration's key there; if it is present the version is already registered (a retry after a
lost answer) and nothing is created again. It raises ``RegistrationConflict`` when the registry
holds another artifact under that version, a ``Transient`` error when a retry may succeed, and
other ``PointercacheError``s (access denied, a malformed manifest) that an operator must fix.

``memory://name`` is the in-process twin for tests of the layers above: it keeps versions like a
manifest, can be told to fail, or to apply a registration and then lose the answer.
"""

from __future__ import annotations

import importlib
from typing import Protocol
from urllib.parse import urlsplit

from pointercache.base.redact import redact_uri
from pointercache.errors import ConfigError, PointercacheError, SourceUnavailable
from pointercache.publish.edit import apply
from pointercache.publish.registration import Outcome, Receipt, Registration
from pointercache.resolve.sources import SourceOptions

REGISTRARS: dict[str, str] = {
    "file": "pointercache.publish.manifests:FileRegistrar",
    "s3": "pointercache.publish.manifests:S3Registrar",
    "configmap": "pointercache.publish.manifests:ConfigMapRegistrar",
    "mlflow+http": "pointercache.publish.mlflow:MlflowRegistrar",
    "mlflow+https": "pointercache.publish.mlflow:MlflowRegistrar",
    "memory": "pointercache.publish.registrars:MemoryRegistrar",
}
"""URI scheme → ``module:Class`` of the registrar that writes to it."""

__all__ = ["REGISTRARS", "MemoryRegistrar", "Outcome", "Receipt", "Registrar", "open_registrar"]


class Registrar(Protocol):
    """Writes registrations to one registry."""

    name: str
    """Redacted URI, safe to log and show."""

    async def register(self, registration: Registration) -> Receipt:
        """Apply ``registration`` idempotently; see the module docstring for the errors."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


def open_registrar(uri: str, options: SourceOptions | None = None) -> Registrar:
    """Build the registrar for ``uri`` from the scheme table; ``ConfigError`` if unknown.

    Building one checks the URI's shape but contacts nothing.
    """
    scheme = urlsplit(uri).scheme.lower()
    target = REGISTRARS.get(scheme)
    if target is None:
        known = ", ".join(sorted(k for k in REGISTRARS if k != "memory"))
        raise ConfigError(
            f"--registry {redact_uri(uri)}: cannot publish to {scheme!r} (one of: {known})"
        )
    module_name, _, class_name = target.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    registrar: Registrar = cls(uri, options or SourceOptions())
    return registrar


class MemoryRegistry:
    """The shared state behind ``memory://`` registrars of one name: manifests by model."""

    def __init__(self) -> None:
        self.manifests: dict[str, bytes] = {}
        self.error: PointercacheError | None = None
        self.failures_left: int | None = None
        self.lose_answers = 0
        self.applied: list[tuple[str, str]] = []

    def fail(self, error: PointercacheError | None = None, *, times: int | None = None) -> None:
        """Make registrations raise ``error`` (default: ``SourceUnavailable``), ``times`` times
        (None: until ``heal``)."""
        self.error = error or SourceUnavailable("memory registry is down")
        self.failures_left = times

    def heal(self) -> None:
        """Accept registrations again."""
        self.error = None
        self.failures_left = None


class MemoryRegistrar:
    """A ``Registrar`` keeping manifests in memory (same edit rule as the manifest registrars).

    State lives in the instance: a registrar gets the ``MemoryRegistry`` it is given (several
    may share one), or a fresh one of its own. ``lose_answers = n`` on the registry makes the
    next ``n`` changes apply and then raise ``SourceUnavailable``, as if the connection broke
    before the answer came back.
    """

    def __init__(
        self,
        uri: str = "memory://registry",
        options: SourceOptions | None = None,
        *,
        registry: MemoryRegistry | None = None,
    ) -> None:
        self.options = options or SourceOptions()
        self.name = redact_uri(uri)
        self.registry = registry or MemoryRegistry()

    async def register(self, registration: Registration) -> Receipt:
        """Apply to the in-memory manifest, or fail / lose the answer as told."""
        reg = self.registry
        if reg.error is not None:
            error = reg.error
            if reg.failures_left is not None:
                reg.failures_left -= 1
                if reg.failures_left <= 0:
                    reg.heal()
            raise error
        current = reg.manifests.get(registration.model)
        data, receipt = apply(current, registration, max_bytes=self.options.max_manifest_bytes)
        if data is not None:
            reg.manifests[registration.model] = data
            reg.applied.append((registration.model, registration.version))
            if reg.lose_answers > 0:
                reg.lose_answers -= 1
                raise SourceUnavailable(f"{self.name}: connection lost before the answer")
        return receipt

    async def aclose(self) -> None:
        """Nothing to release."""
