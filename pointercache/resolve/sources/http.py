"""``http(s)://host/path/model.json``: a JSON manifest served over HTTP (a CDN, a bucket website).

Each resolution is a conditional GET: the ETag and Last-Modified of the last good answer go out as
``If-None-Match`` / ``If-Modified-Since``, so a steady-state poll is one ``304 Not Modified``
without a body, and the manifest parsed last time is reused. The body is streamed and the read
stops at ``SourceOptions.max_manifest_bytes``. Connect and total time are both bounded by
``SourceOptions.timeout``. 404/410 → ``NotFound``; 408/429/5xx, timeouts and connection errors →
``SourceUnavailable``; 401/403 and other refusals → ``SourceError``.

aiohttp is not imported with this module: while it is not loaded, the source probes the registry
over TCP first (``Preflight``), so an unreachable registry fails over to the LKG without paying
the import (~0.4 s).

The plumbing (bounded body reads, the status table, the TCP preflight) is in
``pointercache.adapters.http``.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from pointercache.adapters.http import (
    Preflight,
    client_session,
    client_timeout,
    is_transport_error,
    load_aiohttp,
    read_limited,
    status_error,
    transport_error,
)
from pointercache.base.log import log
from pointercache.base.redact import redact_uri
from pointercache.errors import InvalidManifest
from pointercache.model import manifest
from pointercache.model.candidate import Candidate, Selector
from pointercache.resolve.sources import SourceOptions

if TYPE_CHECKING:
    import aiohttp

    from pointercache.model.manifest import Manifest

MAX_REDIRECTS = 3


class HttpManifestSource:
    """A manifest behind HTTP(S); implements ``Source``. One ``ClientSession`` per source."""

    def __init__(self, uri: str, options: SourceOptions | None = None) -> None:
        self.options = options or SourceOptions()
        self.uri = uri
        self.name = redact_uri(uri)
        self._session: aiohttp.ClientSession | None = None
        self._preflight = Preflight(uri, self.options.timeout, self.name)
        self._etag: str | None = None
        self._last_modified: str | None = None
        self._cached: Manifest | None = None
        self._no_cache = False
        self.requests = 0
        """Requests sent so far (for ``/status`` and benchmarks)."""
        self.not_modified = 0
        """Answers that were ``304 Not Modified``."""

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = client_session(client_timeout(self.options.timeout))
        return self._session

    def invalidate(self) -> None:
        """Forced refresh: the next GET is unconditional and makes caches on the way revalidate."""
        self._cached, self._etag, self._last_modified = None, None, None
        self._no_cache = True

    def _conditional_headers(self, model: str) -> dict[str, str]:
        if self._no_cache:
            self._no_cache = False
            return {"Cache-Control": "no-cache", "Pragma": "no-cache"}
        if self._cached is None or self._cached.model != model:
            return {}
        headers = {}
        if self._etag:
            headers["If-None-Match"] = self._etag
        if self._last_modified:
            headers["If-Modified-Since"] = self._last_modified
        return headers

    async def _get(self, model: str) -> Manifest:
        headers = self._conditional_headers(model)
        self.requests += 1
        async with self._client().get(
            self.uri, headers=headers, max_redirects=MAX_REDIRECTS
        ) as response:
            if response.status == 304 and self._cached is not None and headers:  # noqa: PLR2004
                self.not_modified += 1
                return self._cached
            if response.status != 200:  # noqa: PLR2004
                raise status_error(response.status, self.name)
            limit = self.options.max_manifest_bytes
            data = await read_limited(response, limit, self.name, InvalidManifest)
            etag = response.headers.get("ETag")
            last_modified = response.headers.get("Last-Modified")
        parsed = manifest.parse(data, model=model, max_bytes=limit)
        self._cached, self._etag, self._last_modified = parsed, etag, last_modified
        log.debug("manifest-fetched", registry=self.name, bytes=len(data), etag=etag or "")
        return parsed

    async def resolve(self, model: str, selector: Selector) -> Candidate:
        """Conditional GET, validate (or reuse on 304) and select the candidate.

        While aiohttp is not loaded, a TCP probe goes first (``Preflight``).
        """
        try:
            async with asyncio.timeout(self.options.timeout) as deadline:
                await self._preflight.check()
                load_aiohttp(deadline)
                parsed = await self._get(model)
        except Exception as exc:
            if not is_transport_error(exc):
                raise
            raise transport_error(exc, self.name) from exc
        return parsed.select(selector, registry=self.name)

    async def aclose(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None
