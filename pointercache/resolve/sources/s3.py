"""``s3://bucket/key.json``: a JSON manifest stored in S3 (or an S3-compatible store).

Each resolution is one ``GetObject`` with ``If-None-Match`` set to the ETag of the last good
answer, run in a thread (boto3 blocks); a ``304 Not Modified`` reuses the manifest parsed last
time. Credentials come from the standard AWS chain (environment, IRSA web identity, instance
profile); ``AWS_ENDPOINT_URL`` (or ``SourceOptions.s3_endpoint_url``) selects another store.
Errors are translated by ``pointercache.adapters.s3.translate``: missing key or bucket →
``NotFound``;
throttling, 5xx, timeouts → ``SourceUnavailable``. The whole call is bounded by
``SourceOptions.timeout``; a thread that outlives it is abandoned, not waited for, and ends by
itself: the body is read chunk by chunk (``adapters.s3.read_some``) against the same deadline, so
a server that trickles cannot keep it (and a connection) alive from one poll to the next.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from typing import TYPE_CHECKING, Any

from pointercache.adapters import s3
from pointercache.adapters.http import SOURCE
from pointercache.base.redact import redact_uri
from pointercache.errors import (
    InvalidManifest,
    SourceError,
    SourceUnavailable,
    TooLarge,
)
from pointercache.model import manifest
from pointercache.model.candidate import Candidate, Selector
from pointercache.resolve.sources import SourceOptions

if TYPE_CHECKING:
    from pointercache.model.manifest import Manifest


class S3ManifestSource:
    """A manifest object in S3; implements ``Source``."""

    def __init__(self, uri: str, options: SourceOptions | None = None) -> None:
        self.options = options or SourceOptions()
        self.name = redact_uri(uri)
        self.bucket, self.key = s3.parse_manifest_uri(uri, "registry")
        self._client: Any = None
        self._client_lock = threading.Lock()
        # Importing boto3 and building a client takes longer than a registry timeout on a cold
        # start: do it now, in the background, so the first resolution only pays for its GET.
        threading.Thread(target=self._client_or_none, name="s3-source-warmup", daemon=True).start()
        self._etag: str | None = None
        self._cached: Manifest | None = None
        self.requests = 0
        """GetObject calls so far."""
        self.not_modified = 0
        """Calls answered ``304 Not Modified``."""

    def _ensure_client(self) -> Any:
        with self._client_lock:
            if self._client is None:
                timeout = max(self.options.timeout, 0.1)
                self._client = s3.client(
                    endpoint_url=self.options.s3_endpoint_url,
                    connect_timeout=timeout,
                    read_timeout=timeout,
                    max_attempts=1,
                    max_pool=2,
                )
            return self._client

    def _client_or_none(self) -> None:
        with contextlib.suppress(Exception):  # the first resolution reports the error
            self._ensure_client()

    def _get(self, etag: str | None, deadline: float) -> tuple[bytes | None, str | None]:
        return s3.get_object_if_changed(
            self._ensure_client(),
            self.bucket,
            self.key,
            etag,
            self.options.max_manifest_bytes,
            deadline=deadline,
        )

    async def _fetch(self, model: str) -> Manifest:
        cached = self._cached if self._cached is not None and self._cached.model == model else None
        etag = self._etag if cached is not None else None
        self.requests += 1
        try:
            async with asyncio.timeout(self.options.timeout):
                deadline = time.monotonic() + self.options.timeout
                data, new_etag = await asyncio.to_thread(self._get, etag, deadline)
        except TooLarge as exc:
            raise InvalidManifest(f"{self.name}: {exc}") from exc
        except TimeoutError as exc:
            raise SourceUnavailable(f"{self.name}: timed out") from exc
        except Exception as exc:
            raise s3.translate(exc, self.name, SOURCE) from exc
        if data is None:
            if cached is None:  # pragma: no cover - a 304 without If-None-Match
                raise SourceError(f"{self.name}: not-modified answer without a cached manifest")
            self.not_modified += 1
            return cached
        parsed = manifest.parse(data, model=model, max_bytes=self.options.max_manifest_bytes)
        self._cached, self._etag = parsed, new_etag
        return parsed

    async def resolve(self, model: str, selector: Selector) -> Candidate:
        """Conditional GET, validate (or reuse on 304) and select the candidate."""
        parsed = await self._fetch(model)
        return parsed.select(selector, registry=self.name)

    def invalidate(self) -> None:
        """Forget the cached manifest and ETag: the next resolve is a full GET (forced refresh)."""
        self._cached, self._etag = None, None

    async def aclose(self) -> None:
        """Drop the client (boto3 clients need no explicit close)."""
        client, self._client = self._client, None
        if client is not None:
            await asyncio.to_thread(client.close)
