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

The small helpers at the top (bounded body reads, auth headers from files, error translation) are
shared with the MLflow source and the ``mlflow-artifacts`` fetcher.
"""

from __future__ import annotations

import asyncio
import base64
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from pointercache.adapters import netprobe
from pointercache.base.log import log
from pointercache.base.redact import redact_uri
from pointercache.errors import (
    InvalidManifest,
    NotFound,
    PointercacheError,
    SourceError,
    SourceUnavailable,
)
from pointercache.model import manifest
from pointercache.model.candidate import Candidate, Selector
from pointercache.resolve.sources import SourceOptions

if TYPE_CHECKING:
    import aiohttp

    from pointercache.model.manifest import Manifest

CHUNK = 64 << 10
MAX_REDIRECTS = 3
TRANSIENT_STATUS = frozenset({408, 425, 429})


async def read_limited(
    response: aiohttp.ClientResponse, max_bytes: int, what: str, too_large: type[Exception]
) -> bytes:
    """Stream ``response``'s body, raising ``too_large`` as soon as it passes ``max_bytes``."""
    if response.content_length is not None and response.content_length > max_bytes:
        raise too_large(f"{what}: {response.content_length} bytes is over the {max_bytes} limit")
    buf = bytearray()
    async for chunk in response.content.iter_chunked(CHUNK):
        buf += chunk
        if len(buf) > max_bytes:
            raise too_large(f"{what}: body is over the {max_bytes} limit")
    return bytes(buf)


def auth_headers(token_file: Path | None, basic_auth_file: Path | None) -> dict[str, str]:
    """Build an ``Authorization`` header from the secret files, read now (they may rotate).

    A bearer token wins over basic auth. ``SourceUnavailable`` if a configured file cannot be
    read (a mounted Secret is swapped atomically; a failed read is worth a retry). The secret
    itself never appears in a message.
    """
    try:
        if token_file is not None:
            token = token_file.read_text(encoding="utf-8").strip()
            if token:
                return {"Authorization": f"Bearer {token}"}
        if basic_auth_file is not None:
            pair = basic_auth_file.read_text(encoding="utf-8").strip()
            if pair:
                encoded = base64.b64encode(pair.encode()).decode("ascii")
                return {"Authorization": f"Basic {encoded}"}
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceUnavailable(
            f"cannot read a registry credential file: {type(exc).__name__}"
        ) from exc
    return {}


def client_timeout(seconds: float) -> aiohttp.ClientTimeout:
    """A timeout bounding connect and the whole request by ``seconds``."""
    import aiohttp

    return aiohttp.ClientTimeout(total=seconds, connect=seconds, sock_connect=seconds)


def status_error(status: int, what: str) -> SourceError:
    """Map an HTTP error status of a registry answer to the source error family."""
    if status in (404, 410):
        return NotFound(f"{what}: HTTP {status}")
    if status >= 500 or status in TRANSIENT_STATUS:  # noqa: PLR2004
        return SourceUnavailable(f"{what}: HTTP {status}")
    if status in (401, 403):
        return SourceError(f"{what}: access denied (HTTP {status})")
    return SourceError(f"{what}: refused (HTTP {status})")


class Preflight:
    """The TCP preflight of one HTTP-based source, while aiohttp is not loaded.

    The first probe is a blocking one in the source's constructor (bounded by the source
    timeout): if the registry accepts, aiohttp is imported right there, where importing this
    module used to load it. It must not happen in the first resolution: the chain gives a
    resolution ``SourceOptions.timeout`` (0.5 s by default) of wall time, and the import alone
    can take most of that on a busy node, turning a live registry into a timeout. If the probe
    fails, the first ``check`` (in the first resolution, moments later in init) raises that
    failure without probing twice. Later checks probe asynchronously, inside the resolution's
    timeout, for as long as aiohttp stays unloaded. Once aiohttp is loaded (the sidecar's HTTP
    server, or init after a live registry), nothing is probed.
    """

    def __init__(self, url: str, seconds: float, what: str) -> None:
        self.target = netprobe.target(url)
        self.seconds = seconds
        self.what = what
        self._failed: SourceUnavailable | None = None
        if self.target is None or not netprobe.needed():
            return  # an unparsable host or port is reported by the request, as before
        try:
            netprobe.probe_blocking(*self.target, seconds, what=what)
        except SourceUnavailable as exc:
            self._failed = exc
            return
        import aiohttp  # noqa: F401  (the registry is up: load the client off any request's clock)

    async def check(self) -> None:
        """``SourceUnavailable`` if the registry is unreachable; a no-op once aiohttp is loaded."""
        failed, self._failed = self._failed, None
        if self.target is None or not netprobe.needed():
            return
        if failed is not None:
            raise failed
        await netprobe.probe(*self.target, self.seconds, what=self.what)


def load_aiohttp(deadline: asyncio.Timeout) -> None:
    """Import aiohttp if needed, moving ``deadline`` later by the time the import took.

    The import is a one-off start-up cost of the process, not time the registry took to
    answer. Usually ``Preflight`` has imported it already; this covers a registry that was down
    at construction and came up later, for the source's own deadline (the chain's clock, which
    runs outside the source, still counts it).
    """
    if "aiohttp" in sys.modules:
        return
    loop = asyncio.get_running_loop()
    started = loop.time()
    import aiohttp  # noqa: F401

    when = deadline.when()
    if when is not None:
        deadline.reschedule(when + loop.time() - started)


def is_client_error(exc: BaseException) -> bool:
    """True if ``exc`` is an aiohttp ``ClientError``; never imports aiohttp to find out.

    Without aiohttp in ``sys.modules`` no aiohttp call has run, so no such error can exist.
    """
    if "aiohttp" not in sys.modules:
        return False
    import aiohttp

    return isinstance(exc, aiohttp.ClientError)


def is_transport_error(exc: BaseException) -> bool:
    """A timeout, an OS-level error or an aiohttp ``ClientError``: the registry is unreachable."""
    return isinstance(exc, TimeoutError | OSError) or is_client_error(exc)


def transport_error(exc: BaseException, what: str) -> PointercacheError:
    """Map a timeout or aiohttp transport error to ``SourceUnavailable``; keep our own errors."""
    if isinstance(exc, PointercacheError):
        return exc
    if isinstance(exc, TimeoutError):
        return SourceUnavailable(f"{what}: timed out")
    return SourceUnavailable(f"{what}: {type(exc).__name__}")


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
            import aiohttp

            self._session = aiohttp.ClientSession(
                timeout=client_timeout(self.options.timeout), raise_for_status=False
            )
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
