"""What a model container has loaded: the acknowledgement, the loaded mark, the hook URL templates.

Three values, each with one JSON form, shared by the sidecar, the reader library, the CLI and the
fleet view:

- ``Ack``: what a model container sends to ``POST /loaded`` (``reader.acknowledge`` and
  ``pointercache loaded`` send it too)::

      {"version": "8", "digest": "sha256:<64 hex>"}          # "model" may be added

  At most ``MAX_ACK_BYTES``; unknown keys are refused (a typo must not pass as an empty ack).
- ``Loaded``: what the sidecar knows the model container serves: ``version``, ``digest``, ``at``
  (RFC 3339) and ``via`` (``ack``, ``hook`` or ``probe``). Its JSON form is ``/status``'s
  ``loaded``, the pod annotation ``pointercache.dev/loaded`` and the sidecar's saved state.
- ``UrlTemplate``: an operator's reload hook or probe URL with ``{model}``, ``{version}``,
  ``{digest}`` and ``{path}`` placeholders, parsed once at start-up. Placeholders may appear in
  the path and the query only, never in the scheme or the host, and every value is
  percent-encoded when expanded (RFC 3986 section 2.1), so a version name cannot redirect a hook.
"""

from __future__ import annotations

import enum
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote, urlsplit

import orjson

from pointercache.base.clock import parse_time
from pointercache.base.redact import redact_uri
from pointercache.errors import ConfigError, InvalidAck, InvalidPointer
from pointercache.model.pointer import check_digest, check_name

MAX_ACK_BYTES = 4096
"""An acknowledgement larger than this is refused before it is parsed."""
MAX_MARK_BYTES = 1024
"""A ``Loaded`` document (annotation, saved state) larger than this is refused."""
PLACEHOLDERS = ("model", "version", "digest", "path")
"""What a hook or probe URL may name in braces."""

ReadyWhen = Literal["published", "loaded"]
"""What the sidecar's ``/readyz`` waits for (``--ready-when``)."""


class Via(enum.StrEnum):
    """How the sidecar learnt that a version is loaded."""

    ACK = "ack"
    """The model container acknowledged it (``POST /loaded``, the reader, the CLI)."""
    HOOK = "hook"
    """Every ``--on-flip-url`` hook answered 2xx after the flip."""
    PROBE = "probe"
    """``--loaded-probe-url`` answered 2xx."""


def _object(data: bytes | str, limit: int, what: str) -> dict[str, Any]:
    if len(data) > limit:
        raise InvalidAck(f"{what}: {len(data)} bytes is over the {limit} limit")
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidAck(f"{what}: not valid JSON") from exc
    if not isinstance(doc, dict):
        raise InvalidAck(f"{what}: expected a JSON object")
    return doc


def _fields(doc: Mapping[str, Any], allowed: Iterable[str], what: str) -> None:
    unknown = sorted(set(doc) - set(allowed))
    if unknown:
        raise InvalidAck(f"{what}: unknown field {unknown[0]!r}")


def _version_digest(doc: Mapping[str, Any], what: str) -> tuple[str, str]:
    try:
        return check_name("version", doc.get("version")), check_digest("digest", doc.get("digest"))
    except InvalidPointer as exc:
        raise InvalidAck(f"{what}: {exc}") from exc


@dataclass(frozen=True, slots=True)
class Ack:
    """A model container's statement: "I have loaded this version, with this digest"."""

    version: str
    digest: str
    """``sha256:<64 hex>``, as in the version's ``pointer.json``."""
    model: str | None = None
    """The registered model name, when the sender names it (checked against the sidecar's)."""

    def to_json(self) -> bytes:
        """The request body of ``POST /loaded``."""
        doc: dict[str, str] = {"version": self.version, "digest": self.digest}
        if self.model is not None:
            doc["model"] = self.model
        return orjson.dumps(doc)

    @classmethod
    def parse(cls, data: bytes) -> Ack:
        """Validate a ``POST /loaded`` body; ``InvalidAck`` names what is wrong."""
        doc = _object(data, MAX_ACK_BYTES, "acknowledgement")
        _fields(doc, ("model", "version", "digest"), "acknowledgement")
        version, digest = _version_digest(doc, "acknowledgement")
        model = doc.get("model")
        if model is not None:
            try:
                check_name("model", model)
            except InvalidPointer as exc:
                raise InvalidAck(f"acknowledgement: {exc}") from exc
        return cls(version=version, digest=digest, model=model)


@dataclass(frozen=True, slots=True)
class Loaded:
    """The version a model container serves, as far as the sidecar knows."""

    version: str
    digest: str
    via: Via
    at: str
    """When the sidecar learnt it (RFC 3339, UTC)."""

    def to_dict(self) -> dict[str, str]:
        """The JSON form (``/status``, the pod annotation, the saved state)."""
        return {
            "version": self.version,
            "digest": self.digest,
            "via": self.via.value,
            "at": self.at,
        }

    def to_json(self) -> str:
        """Compact JSON, as written to the ``pointercache.dev/loaded`` annotation."""
        return orjson.dumps(self.to_dict(), option=orjson.OPT_SORT_KEYS).decode()

    @classmethod
    def parse(cls, data: bytes | str) -> Loaded:
        """Read the JSON form back (an annotation or saved state: untrusted); ``InvalidAck``."""
        doc = _object(data, MAX_MARK_BYTES, "loaded")
        _fields(doc, ("version", "digest", "via", "at"), "loaded")
        version, digest = _version_digest(doc, "loaded")
        try:
            via = Via(str(doc.get("via")))
        except ValueError as exc:
            raise InvalidAck(f"loaded: via {doc.get('via')!r} is not ack, hook or probe") from exc
        at = doc.get("at")
        if not isinstance(at, str) or parse_time(at) is None:
            raise InvalidAck(f"loaded: at {at!r} is not an RFC 3339 time")
        return cls(version=version, digest=digest, via=via, at=at)


@dataclass(frozen=True, slots=True)
class UrlTemplate:
    """An http(s) URL with ``{model}``, ``{version}``, ``{digest}`` and ``{path}`` placeholders."""

    text: str

    @classmethod
    def parse(cls, text: str, flag: str) -> UrlTemplate:
        """Validate ``text`` once; ``ConfigError`` naming ``flag`` if it is not usable."""
        try:
            fields = [f for _, f, spec, conv in string.Formatter().parse(text) if f is not None]
            specs = [(spec, conv) for _, f, spec, conv in string.Formatter().parse(text) if f]
        except ValueError as exc:
            raise ConfigError(f"{flag} {redact_uri(text)!r}: unbalanced braces") from exc
        unknown = sorted({f for f in fields if f not in PLACEHOLDERS})
        if unknown:
            names = ", ".join("{" + p + "}" for p in PLACEHOLDERS)
            raise ConfigError(f"{flag}: unknown placeholder {{{unknown[0]}}} (use {names})")
        if any(spec or conv for spec, conv in specs):
            raise ConfigError(f"{flag}: placeholders take no format spec or conversion")
        parts = urlsplit(text)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ConfigError(f"{flag} {redact_uri(text)!r}: expected an http(s):// URL")
        if "{" in parts.netloc or "}" in parts.netloc:
            raise ConfigError(f"{flag}: placeholders may appear in the path and query only")
        return cls(text)

    def expand(self, *, model: str, version: str, digest: str, path: str) -> str:
        """The URL for one version, every value percent-encoded (``/`` kept in ``path``)."""
        return self.text.format(
            model=quote(model, safe=":"),
            version=quote(version, safe=":"),
            digest=quote(digest, safe=":"),
            path=quote(path, safe="/:"),
        )

    def __str__(self) -> str:
        return redact_uri(self.text)


def parse_hooks(values: Iterable[str]) -> list[UrlTemplate]:
    """``--on-flip-url`` values, each validated (``ConfigError`` naming the flag)."""
    return [UrlTemplate.parse(v, "--on-flip-url") for v in values]


def parse_probe(value: str) -> UrlTemplate:
    """The ``--loaded-probe-url`` value, validated."""
    return UrlTemplate.parse(value, "--loaded-probe-url")
