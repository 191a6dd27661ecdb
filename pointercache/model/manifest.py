"""The JSON manifest (schema 1) served by the file, http and s3 sources.

One document per model::

    {"schema": 1, "model": "recommender", "revision": 17,
     "aliases": {"production": "8", "candidate": "9"},
     "stages": {"Production": "8"},
     "versions": {"8": {"uri": "s3://models/recommender/8/", "digest": "sha256:...",
                        "size_bytes": 1234, "signature": null,
                        "idempotency_key": "pc1-...", "tags": {"team": "recs"}}}}

``stages`` is optional and works like ``aliases`` for ``stage:NAME`` selectors. In a version
entry, ``idempotency_key`` (written by ``pointercache publish``: it tells a retried
registration from a different artifact under the same version) and ``tags`` (string → string)
are optional; manifests without them read as before. Validation is
strict: the size is checked before parsing, every field is type-checked, unknown fields are
rejected, model and version names must be safe path components, and every alias or stage must name
a listed version. Each failure is one ``InvalidManifest`` line that names the field.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from pointercache.errors import InvalidManifest, InvalidPointer, NotFound
from pointercache.model.candidate import Candidate, Selector
from pointercache.model.pointer import (
    check_digest,
    check_model_name,
    check_name,
    check_revision,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

SCHEMA_VERSION = 1
_TOP_FIELDS = frozenset({"schema", "model", "revision", "aliases", "stages", "versions"})
_VERSION_FIELDS = frozenset({"uri", "digest", "size_bytes", "signature", "idempotency_key", "tags"})
IDEMPOTENCY_KEY_RE = re.compile(r"^pc1-[0-9a-f]{64}$")
"""Shape of a version's ``idempotency_key`` (see ``pointercache.publish.registration``)."""
MAX_TAG_CHARS = 5000
"""Longest tag key or value accepted in a manifest (MLflow's limit for a version tag value)."""


@dataclass(frozen=True, slots=True)
class VersionEntry:
    """One version listed in a manifest."""

    uri: str
    """Artifact URI (untrusted until the fetcher's allowlist accepts it)."""
    digest: str | None
    """Promised ``sha256:<hex>`` of the staged artifact, or None."""
    size_bytes: int | None
    """Promised total bytes of the staged artifact, or None."""
    signature: dict[str, Any] | None
    """The model's input signature, or None."""
    idempotency_key: str | None = None
    """``pc1-<64 hex>`` of the registration that wrote this entry (``pointercache publish``)."""
    tags: Mapping[str, str] = field(default_factory=dict)
    """Free-form string tags of the version (written by ``pointercache publish --tag``)."""


@dataclass(frozen=True, slots=True)
class Manifest:
    """A validated manifest for one model."""

    model: str
    """Registered model name (already checked against the requested one)."""
    revision: int
    """Monotonic revision of the manifest."""
    aliases: Mapping[str, str]
    """Alias name → version name."""
    stages: Mapping[str, str]
    """Stage name → version name (optional in the document; empty when absent)."""
    versions: Mapping[str, VersionEntry]
    """Version name → entry."""

    def select(self, selector: Selector, *, registry: str) -> Candidate:
        """Return the candidate ``selector`` names; ``NotFound`` if the manifest has none."""
        if selector.kind == "version":
            version = selector.value
        else:
            table = self.aliases if selector.kind == "alias" else self.stages
            found = table.get(selector.value)
            if found is None:
                raise NotFound(f"{self.model}: no {selector.kind} {selector.value!r} in manifest")
            version = found
        entry = self.versions.get(version)
        if entry is None:
            raise NotFound(f"{self.model}: no version {version!r} in manifest")
        return Candidate(
            model=self.model,
            version=version,
            uri=entry.uri,
            digest=entry.digest,
            size_bytes=entry.size_bytes,
            revision=self.revision,
            signature=entry.signature,
            registry=registry,
        )


def parse(data: bytes, *, model: str, max_bytes: int) -> Manifest:
    """Validate ``data`` as the manifest of ``model``; ``InvalidManifest`` names the field."""
    if len(data) > max_bytes:
        raise InvalidManifest(f"manifest: {len(data)} bytes is over the {max_bytes} limit")
    try:
        raw = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidManifest(f"manifest: not valid JSON ({exc})") from exc
    if not isinstance(raw, dict):
        raise InvalidManifest(f"manifest: expected an object, got {type(raw).__name__}")
    _no_unknown("manifest", raw, _TOP_FIELDS)
    schema = raw.get("schema")
    if schema != SCHEMA_VERSION or isinstance(schema, bool):
        raise InvalidManifest(f"schema: {schema!r} is not supported (expected {SCHEMA_VERSION})")
    name = _name("model", raw.get("model"), check_model_name)
    if name != model:
        raise InvalidManifest(f"model: manifest is for {name!r}, not {model!r}")
    versions = _versions(raw.get("versions"))
    return Manifest(
        model=name,
        revision=_revision(raw.get("revision")),
        aliases=_links("aliases", raw.get("aliases"), versions, required=True),
        stages=_links("stages", raw.get("stages", {}), versions, required=False),
        versions=versions,
    )


def _no_unknown(where: str, raw: dict[str, Any], known: frozenset[str]) -> None:
    unknown = sorted(set(raw) - known)
    if unknown:
        raise InvalidManifest(f"{where}.{unknown[0]}: unknown field")


def _name(field: str, value: object, check: Callable[[str, object], str] = check_name) -> str:
    try:
        return check(field, value)
    except InvalidPointer as exc:
        raise InvalidManifest(str(exc)) from None


def _revision(value: object) -> int:
    try:
        return check_revision("revision", value)
    except InvalidPointer as exc:
        raise InvalidManifest(str(exc)) from None


def _count(field: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidManifest(f"{field}: expected a non-negative integer, got {value!r}")
    return value


def _links(
    field: str, value: object, versions: Mapping[str, VersionEntry], *, required: bool
) -> dict[str, str]:
    if value is None and not required:
        return {}
    if not isinstance(value, dict):
        raise InvalidManifest(f"{field}: expected an object, got {type(value).__name__}")
    links: dict[str, str] = {}
    for key, target in value.items():
        if not isinstance(target, str):
            raise InvalidManifest(f"{field}.{key}: expected a version name, got {target!r}")
        if target not in versions:
            raise InvalidManifest(f"{field}.{key}: names version {target!r}, not in versions")
        links[key] = target
    return links


def _versions(value: object) -> dict[str, VersionEntry]:
    if not isinstance(value, dict):
        raise InvalidManifest(f"versions: expected an object, got {type(value).__name__}")
    return {
        _name("versions key", key): _entry(f"versions.{key}", raw) for key, raw in value.items()
    }


def _entry(where: str, raw: object) -> VersionEntry:
    if not isinstance(raw, dict):
        raise InvalidManifest(f"{where}: expected an object, got {type(raw).__name__}")
    _no_unknown(where, raw, _VERSION_FIELDS)
    uri = raw.get("uri")
    if not isinstance(uri, str) or not uri:
        raise InvalidManifest(f"{where}.uri: expected a non-empty string, got {uri!r}")
    digest = raw.get("digest")
    if digest is not None:
        try:
            check_digest(f"{where}.digest", digest)
        except InvalidPointer as exc:
            raise InvalidManifest(str(exc)) from None
    size = raw.get("size_bytes")
    signature = raw.get("signature")
    if signature is not None and (
        not isinstance(signature, dict) or not isinstance(signature.get("inputs", []), list)
    ):
        raise InvalidManifest(f"{where}.signature: expected null or an object with 'inputs' list")
    key = raw.get("idempotency_key")
    if key is not None and (not isinstance(key, str) or not IDEMPOTENCY_KEY_RE.match(key)):
        raise InvalidManifest(f"{where}.idempotency_key: {key!r} is not 'pc1-<64 hex>'")
    return VersionEntry(
        uri=uri,
        digest=digest,
        size_bytes=None if size is None else _count(f"{where}.size_bytes", size),
        signature=signature,
        idempotency_key=key,
        tags=_tags(f"{where}.tags", raw.get("tags")),
    )


def _tags(where: str, value: object) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidManifest(f"{where}: expected an object, got {type(value).__name__}")
    for key, text in value.items():
        if not key or len(key) > MAX_TAG_CHARS:
            raise InvalidManifest(f"{where}: a key is empty or over {MAX_TAG_CHARS} characters")
        if not isinstance(text, str) or len(text) > MAX_TAG_CHARS:
            raise InvalidManifest(f"{where}.{key}: expected a string of at most {MAX_TAG_CHARS}")
    return dict(value)
