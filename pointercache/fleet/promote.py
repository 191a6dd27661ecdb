"""Two-phase promotion: the fleet prestages a candidate, then the alias moves.

``move_alias`` changes the registry (a ``file://`` manifest or an MLflow registry) so that
``alias`` names ``version``, with a higher revision so every sidecar takes it as a change. The
waiting half (every ready pod reports the candidate staged) is
``pointercache.fleet.view.wait_staged``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson

from pointercache.adapters.mlflow import obj, tags
from pointercache.base.redact import redact_uri
from pointercache.errors import (
    ConcurrentUpdate,
    ConfigError,
    InvalidManifest,
    InvalidPointer,
    NotFound,
)
from pointercache.model.manifest import parse
from pointercache.model.revision import raised
from pointercache.resolve.sources import SourceOptions
from pointercache.volume.fsutil import LockBusy, atomic_write_bytes, held, lock_beside

MAX_MANIFEST = 1 << 20


def move_file_alias(
    path: Path, model: str, alias: str, version: str, *, lock_timeout: float = 10.0
) -> int:
    """Point ``alias`` at ``version`` in a manifest file, bump its revision; return it.

    The read-modify-write holds the manifest's lock (``lock_beside``), like ``pointercache
    publish``, so neither loses the other's change; ``ConcurrentUpdate`` if it stays busy for
    ``lock_timeout`` seconds.
    """
    try:
        with held(lock_beside(path), timeout=lock_timeout):
            return _move_file_alias(path, model, alias, version)
    except LockBusy as exc:
        raise ConcurrentUpdate(f"manifest {path}: locked by pid {exc.holder}") from exc


def _move_file_alias(path: Path, model: str, alias: str, version: str) -> int:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise NotFound(f"manifest {path}: {exc.strerror}") from exc
    manifest = parse(data, model=model, max_bytes=MAX_MANIFEST)
    if version not in manifest.versions:
        raise NotFound(f"{model}: version {version!r} is not in {path}")
    doc: dict[str, Any] = orjson.loads(data)
    doc["aliases"] = {**doc.get("aliases", {}), alias: version}
    doc["revision"] = int(doc["revision"]) + 1
    atomic_write_bytes(path, orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n")
    return int(doc["revision"])


async def move_mlflow_alias(
    uri: str, model: str, alias: str, version: str, options: SourceOptions
) -> int:
    """Set the MLflow alias and bump the ``pointercache.revision`` tag; return the new revision.

    The new revision is the current time in epoch ms, but always above the tag's current value:
    a promotion from a machine whose clock runs behind the last one's still moves the counter
    forward (the sidecars compare it with the revision they hold, ``model.revision``).
    """
    from pointercache.adapters.http import is_transport_error, transport_error
    from pointercache.adapters.mlflow import MlflowRest
    from pointercache.resolve.sources.mlflow import REVISION_TAG

    parts = urlsplit(uri)
    base = f"{parts.scheme.removeprefix('mlflow+')}://{parts.netloc}{parts.path.rstrip('/')}"
    rest = MlflowRest(
        base,
        redact_uri(uri),
        timeout=options.timeout,
        max_answer_bytes=options.max_manifest_bytes,
        credentials=options.credentials,
    )
    try:
        await rest.call(
            "model-versions/get", {"name": model, "version": version}, invalid=InvalidManifest
        )
        current = await rest.call("registered-models/get", {"name": model})
        revision = _next_revision(obj(current.get("registered_model"), "registered_model"))
        await rest.post(
            "registered-models/alias", {"name": model, "alias": alias, "version": version}
        )
        await rest.post(
            "registered-models/set-tag",
            {"name": model, "key": REVISION_TAG, "value": str(revision)},
        )
    except Exception as exc:
        if not is_transport_error(exc):
            raise
        raise transport_error(exc, redact_uri(uri)) from exc
    finally:
        await rest.aclose()
    return revision


def _next_revision(registered_model: dict[str, Any]) -> int:
    """Epoch ms now, but above the ``pointercache.revision`` tag the model already has
    (``model.revision.raised``); ``InvalidManifest`` if no higher revision fits."""
    from pointercache.resolve.sources.mlflow import REVISION_TAG

    tagged = tags(registered_model).get(REVISION_TAG)
    current = int(tagged) if tagged is not None and tagged.isdigit() else None
    try:
        return raised(current, time.time_ns() // 1_000_000)
    except InvalidPointer:
        raise InvalidManifest(
            f"{REVISION_TAG} is {current}: no higher revision fits; set the tag lower by hand"
            " (sidecars accept the lower revision after --stale-grace)"
        ) from None


async def move_alias(
    uri: str, model: str, alias: str, version: str, options: SourceOptions | None = None
) -> int:
    """Move ``alias`` to ``version`` in the registry at ``uri``; return the new revision."""
    scheme = urlsplit(uri).scheme.lower()
    if scheme == "file":
        from pointercache.model.uris import file_path

        return move_file_alias(file_path(uri), model, alias, version)
    if scheme in {"mlflow+http", "mlflow+https"}:
        return await move_mlflow_alias(uri, model, alias, version, options or SourceOptions())
    raise ConfigError(
        f"promote: {redact_uri(uri)}: moving an alias is supported for file:// manifests and "
        "MLflow registries; for others, move it in the registry and run promote without "
        "--registry to wait for the fleet only"
    )
