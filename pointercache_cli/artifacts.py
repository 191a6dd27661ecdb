"""Model artifacts and manifests on local paths, for ``pointercache demo`` and the tests.

``make_artifact`` writes a small directory artifact; ``local_manifest`` describes local
artifacts as a manifest (``file://`` URIs, digests and sizes computed); ``write_manifest``
writes one atomically, the way a registry would publish it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pointercache.model.digest import tree_digest
from pointercache.volume.fsutil import atomic_write_bytes


def make_artifact(
    base: Path,
    version: str,
    *,
    files: Mapping[str, bytes] | None = None,
    parts: int = 2,
    size: int = 64,
) -> Path:
    """Create ``base/artifacts/v<version>/`` and return it.

    ``files`` (relative path → bytes) gives its content; without it, ``parts`` files of about
    ``size`` bytes each that differ per version, and a ``meta.json``.
    """
    root = base / "artifacts" / f"v{version}"
    root.mkdir(parents=True, exist_ok=True)
    if files is None:
        files = {
            f"part-{i}.bin": f"{version}:{i}:".encode() * (size // 4 + 1) for i in range(parts)
        }
        files = {**files, "meta.json": json.dumps({"version": version}).encode()}
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def local_manifest(
    model: str,
    revision: int,
    aliases: Mapping[str, str],
    artifacts: Mapping[str, Path],
    *,
    signatures: Mapping[str, dict[str, Any]] | None = None,
    digests: bool = True,
) -> dict[str, Any]:
    """A manifest (schema 1) for artifacts on local paths: ``file://`` URIs, digests, sizes.

    ``artifacts`` maps version → file or directory.
    """
    versions: dict[str, Any] = {}
    for version, path in artifacts.items():
        entry: dict[str, Any] = {"uri": path.resolve().as_uri()}
        if digests:
            entry["digest"], entry["size_bytes"] = tree_digest(path)
        if signatures and version in signatures:
            entry["signature"] = signatures[version]
        versions[version] = entry
    return {
        "schema": 1,
        "model": model,
        "revision": revision,
        "aliases": dict(aliases),
        "versions": versions,
    }


def write_manifest(
    path: Path,
    base: Path,
    *,
    model: str,
    revision: int,
    aliases: Mapping[str, str],
    signatures: Mapping[str, dict[str, Any]] | None = None,
    digests: bool = True,
) -> dict[str, Any]:
    """Write (atomically) a manifest of every ``base/artifacts/v<version>``; return it."""
    artifacts = {a.name[1:]: a for a in sorted((base / "artifacts").iterdir())}
    doc = local_manifest(
        model, revision, aliases, artifacts, signatures=signatures, digests=digests
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, json.dumps(doc, indent=2).encode())
    return doc
