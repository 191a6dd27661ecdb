"""Read a model's input signature from its MLflow ``MLmodel`` file, before the weights.

An MLflow registry answer names the artifact directory; its ``MLmodel`` file (the ``signature:``
block) sits at the top of it, in whatever store holds the artifact: S3 (``mlflow server
--no-serve-artifacts --default-artifact-root s3://…``), an HTTP server, the tracking server's
artifact proxy, a mounted path. ``with_signature`` fetches that one file through the fetcher of
its scheme — the same allowlist, credentials, redirect and address checks as the weights — into
a scratch directory, bounded by ``MAX_MLMODEL_BYTES``, and returns the candidate with the
signature filled in, so the signature gate can refuse a model before gigabytes are downloaded.

No ``MLmodel`` (404, missing key) or one that is over the bound or not the YAML subset MLflow
writes: the model has no comparable signature (the gate's ``--unsigned-model`` decides). A
transient failure (timeout, 5xx) raises ``FetchUnavailable``: the version is retried, never
admitted unchecked.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pointercache.adapters.mlflow import read_signature
from pointercache.base.log import log
from pointercache.base.redact import redact_uri
from pointercache.errors import ArtifactNotFound, TooLarge
from pointercache.model.signature import from_mlmodel
from pointercache.stage.fetchers import Fetcher, FetchOptions, open_fetcher
from pointercache.volume.fsutil import remove_path

if TYPE_CHECKING:
    from pointercache.model.candidate import Candidate

MAX_MLMODEL_BYTES = 1 << 20
"""An ``MLmodel`` larger than this (1 MiB) is not read: the model counts as unsigned."""


async def with_signature(candidate: Candidate, fetch: FetchOptions, scratch: Path) -> Candidate:
    """``candidate`` with ``signature`` read from ``signature_from`` (if it has one to read).

    ``scratch`` is a directory that does not exist yet; it is removed before returning.
    Raises the fetcher's ``FetchError`` for anything but a missing or oversized file.
    """
    uri = candidate.signature_from
    if uri is None or candidate.signature is not None:
        return candidate
    options = replace(fetch, max_bytes=MAX_MLMODEL_BYTES, progress=None, downloaded=None)
    fetcher = open_fetcher(uri, options)
    try:
        await asyncio.to_thread(scratch.mkdir, parents=True)
        body = await _fetch(fetcher, uri, scratch / "MLmodel")
    finally:
        await fetcher.aclose()
        await asyncio.to_thread(remove_path, scratch, ignore_errors=True)
    signature = _parse(body, uri)
    if signature is not None and candidate.preprocessing is not None:
        signature = {**signature, "preprocessing": candidate.preprocessing}
    log.debug("mlmodel-read", uri=redact_uri(uri), signed=signature is not None)
    return replace(candidate, signature=signature, signature_from=None)


async def _fetch(fetcher: Fetcher, uri: str, dest: Path) -> bytes | None:
    try:
        result = await fetcher.fetch(uri, dest)
    except ArtifactNotFound:
        return None
    except TooLarge:
        log.warning("mlmodel-too-large", uri=redact_uri(uri), limit=MAX_MLMODEL_BYTES)
        return None
    if result.is_dir:
        return None  # a directory called MLmodel is not an MLmodel file
    return await asyncio.to_thread(dest.read_bytes)


def _parse(body: bytes | None, uri: str) -> dict[str, Any] | None:
    if body is None:
        return None
    raw = read_signature(body)
    if raw is None:
        if b"signature:" in body:
            log.warning("mlmodel-signature-unreadable", uri=redact_uri(uri))
        return None
    signature = from_mlmodel({"signature": raw})
    return None if signature is None else signature.to_dict()
