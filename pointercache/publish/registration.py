"""What ``pointercache publish`` registers, and the idempotency key that makes a retry harmless.

A ``Registration`` is validated once, where it is built (``Registration.build``, ``ConfigError``
naming the flag), and travels as canonical JSON (sorted keys) through the outbox. Its key::

    "pc1-" + sha256("<model>\\n<version>\\n<digest or 'uri:' + uri>").hexdigest()

is derived from what identifies the artifact, not from when it was published: the same model,
version and digest always give the same key, so a registrar that finds the key in the registry
knows the version is already registered (and one that finds the version under another key knows
it is a different artifact: a conflict). Without a digest, the URI stands in for it.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from pointercache.base.redact import redact_uri
from pointercache.errors import ConfigError, InvalidManifest, InvalidPointer
from pointercache.model.manifest import MAX_TAG_CHARS
from pointercache.model.pointer import check_digest, check_model_name, check_name
from pointercache.model.signature import Signature

KEY_PREFIX = "pc1-"
RESERVED_TAG_PREFIX = "pointercache."
"""Tag keys under this prefix are written by pointercache itself (digest, size, key, revision)."""
MAX_TAG_KEY = 250
"""Longest tag key (MLflow's limit)."""


def idempotency_key(model: str, version: str, digest: str | None, uri: str) -> str:
    """``pc1-<sha256 hex>`` of model, version and digest (the URI when there is no digest)."""
    identity = digest if digest is not None else f"uri:{uri}"
    return KEY_PREFIX + hashlib.sha256(f"{model}\n{version}\n{identity}".encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Registration:
    """One model version to register, optionally with an alias to move to it."""

    model: str
    """Registered model name ([A-Za-z0-9._-], 1-200)."""
    version: str
    """The version's name as the pipeline knows it (for MLflow, the tag ``pointercache.version``:
    MLflow numbers its versions itself)."""
    uri: str
    """Artifact URI, stored as given; never with user info or a presigned query."""
    digest: str | None = None
    """``sha256:<64 hex>`` of the artifact (the tree digest for a directory), or None."""
    size_bytes: int | None = None
    """Total bytes of the artifact, or None."""
    signature: dict[str, Any] | None = None
    """Input signature (``{"inputs": [...], "preprocessing": ...}``), or None."""
    alias: str | None = None
    """Alias to point at this version once it is registered, or None."""
    tags: Mapping[str, str] = field(default_factory=dict)
    """User tags (keys outside ``pointercache.``)."""

    @property
    def key(self) -> str:
        """The idempotency key stored in the registry (``pc1-<64 hex>``)."""
        return idempotency_key(self.model, self.version, self.digest, self.uri)

    @classmethod
    def build(cls, **fields: Any) -> Registration:
        """Validate the fields and return the registration; ``ConfigError`` names the flag."""
        reg = cls(**fields)
        reg.check()
        return reg

    def check(self) -> None:
        """Raise ``ConfigError`` (naming the flag) if a field is malformed."""
        try:
            check_model_name("--model", self.model)
            check_name("--version", self.version)
            if self.alias is not None:
                check_name("--alias", self.alias)
            if self.digest is not None:
                check_digest("--digest", self.digest)
        except InvalidPointer as exc:
            raise ConfigError(str(exc)) from None
        if not self.uri or redact_uri(self.uri) != self.uri or "@" in self.uri.partition("?")[0]:
            raise ConfigError(
                "--uri: empty, or carries credentials or a signed query string "
                "(a registry must not store them)"
            )
        if self.size_bytes is not None and self.size_bytes < 0:
            raise ConfigError("--size-bytes must not be negative")
        if self.signature is not None:
            try:
                Signature.parse(self.signature)
            except InvalidManifest as exc:
                raise ConfigError(f"--signature: {exc}") from None
        self._check_tags()

    def _check_tags(self) -> None:
        for key, value in self.tags.items():
            if not key or len(key) > MAX_TAG_KEY or key.startswith(RESERVED_TAG_PREFIX):
                raise ConfigError(
                    f"--tag {key!r}: keys are 1-{MAX_TAG_KEY} characters, "
                    f"outside {RESERVED_TAG_PREFIX}*"
                )
            if len(value) > MAX_TAG_CHARS:
                raise ConfigError(f"--tag {key}: value over {MAX_TAG_CHARS} characters")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able fields (the outbox payload)."""
        return {
            "model": self.model,
            "version": self.version,
            "uri": self.uri,
            "digest": self.digest,
            "size_bytes": self.size_bytes,
            "signature": self.signature,
            "alias": self.alias,
            "tags": dict(self.tags),
        }

    def to_json(self) -> bytes:
        """Canonical JSON (sorted keys): equal registrations give equal bytes."""
        return orjson.dumps(self.to_dict(), option=orjson.OPT_SORT_KEYS)

    @classmethod
    def from_json(cls, data: bytes) -> Registration:
        """Read back ``to_json``'s bytes (from the outbox); ``ConfigError`` if malformed."""
        try:
            raw = orjson.loads(data)
            return cls.build(**{**raw, "tags": dict(raw.get("tags") or {})})
        except (orjson.JSONDecodeError, TypeError, AttributeError) as exc:
            raise ConfigError(f"outbox entry is not a registration: {exc}") from None

    def manifest_entry(self) -> dict[str, Any]:
        """The manifest ``versions`` entry for this registration (optional fields left out)."""
        entry: dict[str, Any] = {"uri": self.uri, "idempotency_key": self.key}
        if self.digest is not None:
            entry["digest"] = self.digest
        if self.size_bytes is not None:
            entry["size_bytes"] = self.size_bytes
        if self.signature is not None:
            entry["signature"] = self.signature
        if self.tags:
            entry["tags"] = dict(self.tags)
        return entry

    def describe(self) -> str:
        """``model version`` (and ``-> alias``) for messages."""
        return f"{self.model} {self.version}" + (f" (alias {self.alias})" if self.alias else "")


class Outcome(enum.StrEnum):
    """What a successful ``register`` did."""

    CREATED = "created"
    """The version was registered now."""
    ALREADY = "already"
    """The registry already held this registration (its key); nothing new was created."""


@dataclass(frozen=True, slots=True)
class Receipt:
    """The registry's side of a successful registration."""

    outcome: Outcome
    """created, or already there."""
    registry_version: str
    """The version as the registry names it (MLflow numbers its own; manifests use ours)."""
    revision: int | None
    """The registry's revision after the change (manifest revision, MLflow revision tag)."""

    def summary(self) -> str:
        """``version 8, revision 17`` for the outbox's ``result`` column."""
        revision = "" if self.revision is None else f", revision {self.revision}"
        return f"{self.outcome} as version {self.registry_version}{revision}"
