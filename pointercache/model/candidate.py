"""What a source answers: a selector goes in, a candidate comes out.

A candidate is untrusted until staged: its ``uri`` is checked against the allowlist by the fetcher,
and its ``digest``/``size_bytes`` (when given) are enforced on the staged bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pointercache.errors import ConfigError
from pointercache.model.pointer import check_digest, check_name

SelectorKind = Literal["alias", "version", "stage"]
Provenance = Literal["local", "remote"]
"""Where a candidate came from: ``"local"`` for a ``file://`` manifest on this pod's own
filesystem and the operator's pinned version; ``"remote"`` for everything else (HTTP, S3, MLflow
and ConfigMap registries, and the node and cluster LKG, which other pods can write)."""


@dataclass(frozen=True, slots=True)
class Selector:
    """Which version to serve: ``alias:production``, ``version:8`` or ``stage:Production``."""

    kind: SelectorKind
    value: str

    @classmethod
    def parse(cls, text: str) -> Selector:
        """Parse ``kind:value``; raise ``ConfigError`` on anything else."""
        kind, sep, value = text.partition(":")
        if not sep or kind not in ("alias", "version", "stage") or not value.strip():
            raise ConfigError(f"selector {text!r}: expected alias:NAME, version:N or stage:NAME")
        return cls(kind, value.strip())  # type: ignore[arg-type]

    def __str__(self) -> str:
        return f"{self.kind}:{self.value}"


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
    """Monotonic revision of the source's answer; 0 where the source has none."""
    signature: dict[str, Any] | None = None
    """The model's input signature, when the source knows it."""
    registry: str = ""
    """Redacted name of the source that answered (for ``source_detail``)."""
    provenance: Provenance = "remote"
    """Where the answer came from; a ``file://`` URI from a remote one needs an explicit
    ``--allow`` prefix (``pointercache.stage.allow``)."""

    def __post_init__(self) -> None:
        check_name("model", self.model)
        check_name("version", self.version)
        if self.digest is not None:
            check_digest("digest", self.digest)
        if self.size_bytes is not None and self.size_bytes < 0:
            raise ValueError("size_bytes must be non-negative")
