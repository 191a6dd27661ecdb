"""What a source answers: a selector goes in, a candidate comes out.

A candidate is untrusted until staged: its ``uri`` is checked against the allowlist by the fetcher,
and its ``digest``/``size_bytes`` (when given) are enforced on the staged bytes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from pointercache.errors import ConfigError
from pointercache.model.pointer import (
    check_digest,
    check_model_name,
    check_name,
    check_revision,
)

SelectorKind = Literal["alias", "version", "stage"]
SELECTOR_VALUE_RE = re.compile(r"^[\w.-]{1,255}$")
"""An alias, version or stage name: letters (any script), digits, ``_``, ``-`` and ``.``, as
MLflow's aliases (``[\\w-]``, 255) and versions and the manifest's names allow."""


@dataclass(frozen=True, slots=True)
class Selector:
    """Which version to serve: ``alias:production``, ``version:8`` or ``stage:Production``."""

    kind: SelectorKind
    value: str

    @classmethod
    def parse(cls, text: str) -> Selector:
        """Parse ``kind:value``; raise ``ConfigError`` on anything else.

        The value is an alias, version or stage name as a registry spells it
        (``SELECTOR_VALUE_RE``); a value no supported registry accepts (spaces, ``/``, ``:``)
        is refused here, at start-up, not on every poll.
        """
        kind, sep, value = text.partition(":")
        if not sep or kind not in ("alias", "version", "stage") or not value.strip():
            raise ConfigError(f"selector {text!r}: expected alias:NAME, version:N or stage:NAME")
        value = value.strip()
        if not SELECTOR_VALUE_RE.match(value) or value in {".", ".."}:
            raise ConfigError(
                f"selector {text!r}: {value!r} is not an alias, version or stage name"
                " (letters, digits, '_', '-', '.'; 1-255)"
            )
        return cls(kind, value)  # type: ignore[arg-type]

    def __str__(self) -> str:
        return f"{self.kind}:{self.value}"


DEFAULT_SELECTOR = Selector("alias", "production")
"""``--selector``'s default."""


@dataclass(frozen=True, slots=True)
class Candidate:
    """A model version a source says should be served, not yet fetched or verified."""

    model: str
    """Registered model name (checked against the requested one)."""
    version: str
    """Version as the source names it."""
    uri: str
    """Where the artifact is; untrusted, may carry credentials (never logged unredacted)."""
    digest: str | None = None
    """Promised ``sha256:<hex>``, enforced when present."""
    size_bytes: int | None = None
    """Promised size in bytes, enforced when present."""
    revision: int = 0
    """The registry's revision of this answer (its own counter, compared only with its own
    answers: ``model.revision``); 0 where the registry has none."""
    signature: dict[str, Any] | None = None
    """The model's input signature, when the source knows it."""
    registry: str = ""
    """Redacted name of the source that answered (for ``source_detail``)."""
    signature_from: str | None = None
    """URI of the model's MLflow ``MLmodel`` file, when ``signature`` is still to be read from
    it: the stage layer reads it through the fetcher of its scheme (S3, HTTP, the MLflow
    artifact proxy, file) before the weights are downloaded."""
    preprocessing: str | None = None
    """A preprocessing version to add to the signature read from ``signature_from``."""

    def __post_init__(self) -> None:
        check_model_name("model", self.model)
        check_name("version", self.version)
        if self.digest is not None:
            check_digest("digest", self.digest)
        check_revision("revision", self.revision)
        if self.size_bytes is not None and self.size_bytes < 0:
            raise ValueError("size_bytes must be non-negative")
