"""The registry claim behind a published version, recorded beside its pointer (``claim.json``).

``{"registry": "<redacted name>", "revision": N}``: which registry's revision the served version
holds against later answers (``pointercache.model.revision``). It is internal (readers of the
volume never need it) and written with the same atomic write as a pointer, before the version is
published or when a registry confirms it. A missing or damaged file reads as no claim: the
sidecar then falls back to what the pointer records, never to a refusal.
"""

from __future__ import annotations

import os
from pathlib import Path

import orjson

from pointercache.base.log import log
from pointercache.errors import InvalidPointer
from pointercache.model.pointer import check_revision
from pointercache.model.revision import Claim
from pointercache.volume import layout
from pointercache.volume.fsutil import Writer, atomic_write_bytes

MAX_CLAIM_BYTES = 4096
"""A claim file larger than this is not read."""


def write(version_dir: Path, claim: Claim | None, *, write: Writer = os.write) -> None:
    """Record ``claim`` beside ``version_dir``'s pointer (atomically); None removes it.

    Raises ``OSError`` (the store translates it).
    """
    path = version_dir / layout.CLAIM
    if claim is None:
        path.unlink(missing_ok=True)
        return
    body = orjson.dumps({"registry": claim.registry, "revision": claim.revision})
    atomic_write_bytes(path, body + b"\n", write=write)


def read(version_dir: Path) -> Claim | None:
    """The claim recorded beside ``version_dir``'s pointer; None if none or unreadable."""
    path = version_dir / layout.CLAIM
    try:
        with path.open("rb") as fh:
            raw = orjson.loads(fh.read(MAX_CLAIM_BYTES))
        registry = raw["registry"] if isinstance(raw, dict) else None
        revision = check_revision("revision", raw.get("revision"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, AttributeError, InvalidPointer) as exc:
        log.warning("claim-unreadable", path=str(path), error=exc)
        return None
    if not isinstance(registry, str):
        log.warning("claim-unreadable", path=str(path), error="registry is not a string")
        return None
    return Claim(registry, revision)
