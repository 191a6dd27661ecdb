"""The pointer document (schema 1): what is served, from where, and why.

A pointer is what consumers read from ``pointer.json``. It is validated field by field when read,
so a damaged or hand-edited file gives a one-line error that names the field. It never carries a
credential or a presigned query string: ``uri`` is redacted before a pointer is built.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal, get_args

import orjson

from pointercache.base.clock import utcnow
from pointercache.base.redact import redact_uri
from pointercache.errors import InvalidPointer

SCHEMA_VERSION = 1
MAX_POINTER_BYTES = 1 << 20
"""A pointer file larger than this is rejected before it is parsed (1 MiB)."""

SourceKind = Literal["registry", "lkg-node", "lkg-cluster", "pinned"]
SOURCE_KINDS: tuple[str, ...] = get_args(SourceKind)

DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
"""Versions (and manifest aliases): plain names, usable as path components as they are."""
MAX_REVISION = 2**63 - 1
"""The largest revision accepted anywhere (a Kubernetes/JSON int64); above it is invalid."""
MAX_MODEL_NAME = 256
"""Characters in a registered model name (MLflow's ``registered_models.name`` column)."""
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_name(field: str, value: object) -> str:
    """Validate a version (or a manifest alias): ``[A-Za-z0-9._-]``, 1-200, not ``.``/``..``.

    Raises ``InvalidPointer`` naming ``field``. Versions become part of a directory name on the
    volume as they are; MLflow's are integers.
    """
    if not isinstance(value, str) or not NAME_RE.match(value) or value in {".", ".."}:
        raise InvalidPointer(f"{field}: {value!r} is not a valid name ([A-Za-z0-9._-], 1-200)")
    return value


def check_model_name(field: str, value: object) -> str:
    """Validate a registered model name: what a supported registry may call a model.

    The names MLflow's Model Registry accepts (``mlflow.utils.validation._validate_model_name``):
    not blank, no ``/`` or ``:``, not ``.`` and not starting with ``..``, at most
    ``MAX_MODEL_NAME`` characters; and no control characters. Spaces, dots, ``@``, ``%`` and
    non-ASCII letters are fine (``Credit Risk``). Such a name is never used on disk as it is:
    ``pointercache.volume.layout.disk_name`` derives a safe file name from it. Raises
    ``InvalidPointer`` naming ``field``.
    """
    if (
        not isinstance(value, str)
        or not value.strip()
        or len(value) > MAX_MODEL_NAME
        or "/" in value
        or ":" in value
        or _CONTROL.search(value)
        or value == "."
        or value.startswith("..")
        or posixpath.normpath(value) != value
    ):
        raise InvalidPointer(
            f"{field}: {value!r} is not a model name a registry accepts (1-{MAX_MODEL_NAME}"
            " characters, not blank, no '/', ':' or control characters, not '.' or '..*')"
        )
    return value


def check_revision(field: str, value: object) -> int:
    """Validate a revision: an integer 0..``MAX_REVISION`` (2**63-1), not a bool.

    Raises ``InvalidPointer`` naming ``field``. The rule for comparing revisions is
    ``pointercache.model.revision``.
    """
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_REVISION:
        raise InvalidPointer(f"{field}: expected an integer from 0 to 2**63-1, got {value!r}")
    return value


def check_digest(field: str, value: object) -> str:
    """Validate a ``sha256:<64 hex>`` digest."""
    if not isinstance(value, str) or not DIGEST_RE.match(value):
        raise InvalidPointer(f"{field}: {value!r} is not 'sha256:<64 lowercase hex>'")
    return value


@dataclass(frozen=True, slots=True)
class Pointer:
    """One published model version and its provenance (``pointer.json``, schema 1)."""

    model: str
    """Registered model name."""
    version: str
    """Version as the registry names it ("8")."""
    uri: str
    """Where the artifact came from, redacted (no credentials, no query string)."""
    digest: str
    """``sha256:<hex>`` of the artifact (tree digest for directories, see ``digest.py``)."""
    size_bytes: int
    """Total bytes of the artifact's regular files."""
    revision: int
    """The answering registry's revision (its own counter; 0 where it has none). Compared only
    with the same registry's (``pointercache.model.revision``)."""
    signature: dict[str, Any] | None
    """The model's input signature, or None when the source gives none."""
    source: SourceKind
    """Which step of the resolution chain answered."""
    source_detail: str
    """Which registry answered, or why the chain fell back."""
    resolved_at: str
    """When this pointer was resolved (RFC 3339, UTC)."""
    registry_seen_at: str | None
    """When a registry last confirmed this version, or None if never."""
    schema: int = SCHEMA_VERSION

    @property
    def short(self) -> str:
        """Directory name of this version in the store: ``<version>-<digest12>``."""
        return f"{self.version}-{self.digest.removeprefix('sha256:')[:12]}"

    def with_provenance(
        self, source: SourceKind, detail: str, *, registry_seen_at: str | None = None
    ) -> Pointer:
        """Return a copy with new provenance and a fresh ``resolved_at``."""
        return replace(
            self,
            source=source,
            source_detail=detail,
            resolved_at=utcnow(),
            registry_seen_at=registry_seen_at or self.registry_seen_at,
        )

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-ready mapping, ``uri`` redacted once more for safety."""
        data = asdict(self)
        data["uri"] = redact_uri(self.uri)
        return data

    def to_json(self) -> bytes:
        """Serialize as indented JSON with a trailing newline."""
        return (
            orjson.dumps(self.to_dict(), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
        )

    @classmethod
    def from_json(cls, data: bytes | str) -> Pointer:
        """Parse and validate a pointer document; raise ``InvalidPointer`` naming the field."""
        if len(data) > MAX_POINTER_BYTES:
            raise InvalidPointer(
                f"pointer: {len(data)} bytes is over the {MAX_POINTER_BYTES} limit"
            )
        try:
            raw = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise InvalidPointer(f"pointer: not valid JSON ({exc})") from exc
        return cls.from_mapping(raw)

    @classmethod
    def read(cls, path: Path) -> Pointer:
        """Read and validate ``path``; raise ``InvalidPointer`` (or ``OSError`` if missing)."""
        with path.open("rb") as fh:
            data = fh.read(MAX_POINTER_BYTES + 1)
        try:
            return cls.from_json(data)
        except InvalidPointer as exc:
            raise InvalidPointer(f"{path}: {exc}") from None

    @classmethod
    def from_mapping(cls, raw: object) -> Pointer:
        """Validate a decoded JSON object field by field."""
        if not isinstance(raw, dict):
            raise InvalidPointer(f"pointer: expected an object, got {type(raw).__name__}")
        schema = raw.get("schema", SCHEMA_VERSION)
        if schema != SCHEMA_VERSION:
            raise InvalidPointer(f"schema: {schema!r} is not supported (expected {SCHEMA_VERSION})")
        unknown = set(raw) - set(cls.__dataclass_fields__)
        if unknown:
            raise InvalidPointer(f"{min(unknown)}: unknown field")
        return cls(
            model=check_model_name("model", raw.get("model")),
            version=check_name("version", raw.get("version")),
            uri=_str(raw, "uri"),
            digest=check_digest("digest", raw.get("digest")),
            size_bytes=_int(raw, "size_bytes"),
            revision=check_revision("revision", raw.get("revision")),
            signature=_signature(raw.get("signature")),
            source=_source(raw.get("source")),
            source_detail=_str(raw, "source_detail", allow_empty=True),
            resolved_at=_str(raw, "resolved_at"),
            registry_seen_at=_opt_str(raw, "registry_seen_at"),
        )


def _str(raw: dict[str, Any], field: str, *, allow_empty: bool = False) -> str:
    value = raw.get(field)
    if not isinstance(value, str) or (not value and not allow_empty):
        raise InvalidPointer(f"{field}: expected a non-empty string, got {value!r}")
    return value


def _opt_str(raw: dict[str, Any], field: str) -> str | None:
    value = raw.get(field)
    if value is not None and not isinstance(value, str):
        raise InvalidPointer(f"{field}: expected a string or null, got {value!r}")
    return value


def _int(raw: dict[str, Any], field: str) -> int:
    value = raw.get(field)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidPointer(f"{field}: expected a non-negative integer, got {value!r}")
    return value


def _signature(value: object) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("inputs", []), list):
        raise InvalidPointer("signature: expected null or an object with an 'inputs' list")
    return value


def _source(value: object) -> SourceKind:
    if value not in SOURCE_KINDS:
        raise InvalidPointer(f"source: {value!r} is not one of {', '.join(SOURCE_KINDS)}")
    return value  # type: ignore[return-value]
