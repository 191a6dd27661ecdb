"""Shared HTTP client plumbing (aiohttp): status tables, bounded bodies, credentials, preflight.

Every HTTP-speaking source and fetcher (HTTP manifests, the MLflow REST API, the HTTP and MLflow
artifact fetchers, promotion) maps an HTTP status to an error through **one** table,
``classify_status``, and one error family per side of the chain::

    status                 kind          SOURCE family         FETCH family       HOOK family
    404, 410               NOT_FOUND     NotFound              ArtifactNotFound   HookFailed
    408, 425, 429, 5xx     UNAVAILABLE   SourceUnavailable     FetchUnavailable   HookUnavailable
    401, 403               DENIED        SourceError           FetchError         HookFailed
    anything else          REFUSED       SourceError           FetchError         HookFailed

(The UNAVAILABLE classes are ``Transient``; the HOOK family is the model server's reload hooks
and loaded probe, called by ``send``.)

(410 Gone is a permanent absence, RFC 9110 §15.5.11; 425 Too Early asks for a retry, RFC 8470.)
The Kubernetes adapter keeps its own family (``adapters.kube.errors``) because 409 and 410 mean
something else there, and classifies the rest with the same table.

A body is accepted only for what its status and headers prove it holds (``body_range``): a
``206`` must carry a ``Content-Range`` that starts exactly where the ``Range`` request asked,
runs to the end of a representation of the known size, and agrees with ``Content-Length``; a
``200`` must not carry a ``Content-Range`` (RFC 9110 §14.4, §15.3.1, §15.3.7). Anything else is
a ``RangeMismatch``, and the caller starts over rather than splice bytes it cannot place.

aiohttp is not imported with this module: ``Preflight`` probes an HTTP registry over TCP first,
so an unreachable registry fails over to the LKG without paying the import (~0.4 s).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import enum
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pointercache.adapters import netprobe
from pointercache.errors import (
    ArtifactNotFound,
    FetchError,
    FetchUnavailable,
    HookFailed,
    HookUnavailable,
    NotFound,
    PointercacheError,
    SourceError,
    SourceUnavailable,
)

if TYPE_CHECKING:
    from pathlib import Path

    import aiohttp

CHUNK = 64 << 10
"""Bytes per read when a small body (a manifest, an API answer) is streamed."""


class StatusKind(enum.Enum):
    """What an HTTP error status means for the caller."""

    NOT_FOUND = "not found"
    UNAVAILABLE = "unavailable"
    DENIED = "access denied"
    REFUSED = "refused"


_TRANSIENT_STATUS = frozenset({408, 425, 429})


def classify_status(status: int) -> StatusKind:
    """The one status table (see the module docstring); ``status`` is any non-success code."""
    if status in (404, 410):
        return StatusKind.NOT_FOUND
    if status >= 500 or status in _TRANSIENT_STATUS:  # noqa: PLR2004
        return StatusKind.UNAVAILABLE
    if status in (401, 403):
        return StatusKind.DENIED
    return StatusKind.REFUSED


@dataclass(frozen=True, slots=True)
class ErrorFamily:
    """The error classes one side of the chain raises for each ``StatusKind``."""

    not_found: type[PointercacheError]
    unavailable: type[PointercacheError]
    """Must be a ``Transient`` subclass: retry code asks only that."""
    failed: type[PointercacheError]
    """Denied and refused: not worth a retry."""

    def for_kind(self, kind: StatusKind) -> type[PointercacheError]:
        """The class for ``kind``."""
        if kind is StatusKind.NOT_FOUND:
            return self.not_found
        if kind is StatusKind.UNAVAILABLE:
            return self.unavailable
        return self.failed


SOURCE = ErrorFamily(not_found=NotFound, unavailable=SourceUnavailable, failed=SourceError)
"""Registry answers (``SourceError`` branch)."""
FETCH = ErrorFamily(not_found=ArtifactNotFound, unavailable=FetchUnavailable, failed=FetchError)
"""Artifact transfers (``FetchError`` branch)."""
HOOK = ErrorFamily(not_found=HookFailed, unavailable=HookUnavailable, failed=HookFailed)
"""The model server's reload hooks and loaded probe (``LoadError`` branch)."""


def status_error(status: int, what: str, family: ErrorFamily = SOURCE) -> PointercacheError:
    """The error of ``family`` for an HTTP error ``status``; the message names ``what``."""
    kind = classify_status(status)
    return family.for_kind(kind)(f"{what}: {kind.value} (HTTP {status})")


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


class RangeMismatch(ValueError):
    """A response's status and headers do not prove which bytes its body holds."""


@dataclass(frozen=True, slots=True)
class BodyRange:
    """Which bytes of the representation a ``200`` or ``206`` body holds."""

    start: int
    """Offset of the body's first byte (0 for a whole representation)."""
    length: int | None
    """Bytes in the body (None: not declared, a chunked body)."""
    total: int | None
    """Bytes in the whole representation (None: not declared)."""


_CONTENT_RANGE = re.compile(r"bytes (\d{1,19})-(\d{1,19})/(\d{1,19}|\*)")
_DIGITS = re.compile(r"\d{1,19}")


def body_range(
    status: int, headers: Mapping[str, str], *, asked_from: int, known_total: int | None
) -> BodyRange:
    """What the body of an answer to ``GET`` holds, proved by status and headers.

    ``asked_from`` is the ``N`` of the ``Range: bytes=N-`` that was sent (0: no Range header);
    ``known_total`` the representation size an earlier answer declared (or None). Rules:

    - ``200``: the whole representation; ``Content-Range`` must be absent (it belongs to 206 and
      416, RFC 9110 §14.4) — a 200 that carries one is a server sending a part as if whole;
    - ``206``: only to a Range request; ``Content-Range: bytes N-L/T`` with ``N == asked_from``,
      ``L == T - 1`` (an open range runs to the end, §14.1.2), ``T`` numeric and equal to
      ``known_total`` when known; ``Content-Length``, when present, equal to ``L - N + 1``;
      multipart answers are refused (we never ask for several ranges);
    - a ``Content-Length`` that is not one plain number is refused (§8.6).

    Raise ``RangeMismatch`` naming the broken rule; any other status is not for this function.
    """
    length = _content_length(headers)
    content_range = headers.get("Content-Range")
    if status == 200:  # noqa: PLR2004
        if content_range is not None:
            raise RangeMismatch(f"a 200 answer with Content-Range {content_range[:80]!r}")
        return BodyRange(start=0, length=length, total=length)
    if status != 206:  # noqa: PLR2004
        raise RangeMismatch(f"HTTP {status} is not a body answer")
    if asked_from <= 0:
        raise RangeMismatch("a 206 answer to a request without Range")
    first, last, total = _content_range(content_range)
    if first != asked_from:
        raise RangeMismatch(f"206 from byte {first}, asked from {asked_from}")
    if last != total - 1 or last < first:
        raise RangeMismatch(f"206 with bytes {first}-{last}/{total}, not to the end")
    if known_total is not None and total != known_total:
        raise RangeMismatch(f"206 of a {total}-byte representation, {known_total} before")
    if length is not None and length != last - first + 1:
        raise RangeMismatch(f"206 of {last - first + 1} bytes with Content-Length {length}")
    return BodyRange(start=first, length=last - first + 1, total=total)


def _content_range(value: str | None) -> tuple[int, int, int]:
    """(first, last, complete length) of ``bytes first-last/complete``; ``RangeMismatch`` for
    anything else, an unknown length (``*``) included."""
    match = _CONTENT_RANGE.fullmatch((value or "").strip())
    if match is None:
        raise RangeMismatch(f"206 with Content-Range {str(value)[:80]!r}")
    if match.group(3) == "*":
        raise RangeMismatch("206 without the representation's size")
    return int(match.group(1)), int(match.group(2)), int(match.group(3))


def _content_length(headers: Mapping[str, str]) -> int | None:
    getall = getattr(headers, "getall", None)
    values = list(getall("Content-Length", [])) if getall else []
    if not values and headers.get("Content-Length") is not None:
        values = [str(headers.get("Content-Length"))]
    if not values:
        return None
    if len(set(values)) != 1 or not _DIGITS.fullmatch(values[0].strip()):
        raise RangeMismatch(f"Content-Length {', '.join(values)[:80]!r}")
    return int(values[0].strip())


@dataclass(frozen=True, slots=True)
class Credentials:
    """Where a registry's secrets are: files, read on each request (a Secret may rotate)."""

    token_file: Path | None = None
    """A bearer token (wins over basic auth)."""
    basic_auth_file: Path | None = None
    """``user:password`` for HTTP basic auth."""

    def headers(self) -> dict[str, str]:
        """The ``Authorization`` header, read now (see ``auth_headers``)."""
        return auth_headers(self.token_file, self.basic_auth_file)


def auth_headers(token_file: Path | None, basic_auth_file: Path | None) -> dict[str, str]:
    """Build an ``Authorization`` header from the secret files, read now (they may rotate).

    A bearer token wins over basic auth (RFC 6750, RFC 7617). ``SourceUnavailable`` if a
    configured file cannot be read (a mounted Secret is swapped atomically; a failed read is
    worth a retry). The secret itself never appears in a message.
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


def transfer_timeout(connect: float, read: float) -> aiohttp.ClientTimeout:
    """A timeout for transfers of any length: ``connect`` to connect, ``read`` per socket read."""
    import aiohttp

    return aiohttp.ClientTimeout(total=None, sock_connect=connect, sock_read=read)


def client_session(
    timeout: aiohttp.ClientTimeout,
    *,
    raise_for_status: bool = False,
    auto_decompress: bool = True,
    read_bufsize: int = 2**16,
) -> aiohttp.ClientSession:
    """The one way pointercache opens an HTTP client session.

    Proxies from the environment are ignored (``trust_env=False``): a registry answer must not
    make us talk to a host the allowlist did not see. Call it inside a running event loop.
    """
    import aiohttp

    return aiohttp.ClientSession(
        timeout=timeout,
        raise_for_status=raise_for_status,
        auto_decompress=auto_decompress,
        read_bufsize=read_bufsize,
        trust_env=False,
    )


def network_errors() -> tuple[type[BaseException], ...]:
    """What a broken connection raises once a session exists (aiohttp is loaded by then)."""
    import aiohttp

    return (aiohttp.ClientError, TimeoutError, ConnectionError)


def exact_url(url: str) -> Any:
    """``url`` as a ``yarl.URL`` sent byte for byte (``encoded=True``).

    Presigned URLs break if their percent-encoding is normalized.
    """
    import yarl

    return yarl.URL(url, encoded=True)


class Preflight:
    """The TCP preflight of one HTTP-based source, while aiohttp is not loaded.

    The first probe is a blocking one in the source's constructor (bounded by the source
    timeout): if the registry accepts, aiohttp is imported right there, where importing the
    source module used to load it. It must not happen in the first resolution: the chain gives
    a resolution ``SourceOptions.timeout`` (0.5 s by default) of wall time, and the import alone
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
    """A timeout, an OS-level error or an aiohttp ``ClientError``: the peer is unreachable."""
    return isinstance(exc, TimeoutError | OSError) or is_client_error(exc)


def transport_error(
    exc: BaseException, what: str, family: ErrorFamily = SOURCE
) -> PointercacheError:
    """Map a timeout or aiohttp transport error to ``family.unavailable``; keep our own errors."""
    if isinstance(exc, PointercacheError):
        return exc
    if isinstance(exc, TimeoutError):
        return family.unavailable(f"{what}: timed out")
    return family.unavailable(f"{what}: {type(exc).__name__}")


MAX_HOOK_ANSWER = 64 << 10
"""Bytes of a hook's or probe's answer that are read (and thrown away) before it is closed."""


async def send(
    method: str,
    url: str,
    *,
    seconds: float,
    what: str,
    body: bytes | None = None,
    family: ErrorFamily = HOOK,
) -> int:
    """Send one request to an operator-configured URL; return its 2xx status.

    Used for the model server's reload hooks and loaded probe. ``body`` goes out as
    ``application/json``. Redirects are not followed (a 3xx is an answer, classified like any
    other status), at most ``MAX_HOOK_ANSWER`` bytes of the answer are read, and the whole
    exchange is bounded by ``seconds``. A non-2xx status raises the error of ``family``
    from the one status table; a timeout or broken connection raises ``family.unavailable``.
    ``what`` names the call in messages (redacted by the caller).
    """
    import aiohttp

    headers = {"Content-Type": "application/json"} if body is not None else {}
    try:
        async with (
            client_session(client_timeout(seconds)) as session,
            session.request(
                method, exact_url(url), data=body, headers=headers, allow_redirects=False
            ) as response,
        ):
            with contextlib.suppress(TooLargeAnswer):
                await read_limited(response, MAX_HOOK_ANSWER, what, TooLargeAnswer)
            status = response.status
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise transport_error(exc, what, family) from exc
    if not 200 <= status < 300:  # noqa: PLR2004
        raise status_error(status, what, family)
    return status


class TooLargeAnswer(Exception):
    """An answer body past ``MAX_HOOK_ANSWER``: not read further (its status still counts)."""
