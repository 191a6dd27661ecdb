"""A cheap TCP preflight for HTTP registries, so an unreachable one costs no aiohttp import.

Importing aiohttp takes 300-450 ms (``aiohttp.connector`` builds SSL contexts at import time),
several times what the rest of ``pointercache init`` needs. When the registry cannot be reached
that work buys nothing: the chain serves from the node LKG anyway. A probe opens (and at once
closes) a plain TCP connection with the standard library, and raises ``SourceUnavailable`` with
a short reason when the registry refuses, its name does not resolve, or it does not accept in
time. It connects directly, like our aiohttp sessions (``trust_env=False``: no proxy), and checks
TCP only (no TLS handshake, no HTTP). Like the sessions, it resolves the name once through the
``AddressPolicy`` and connects only to the addresses that policy checked (a registry name that
resolves to a metadata address is refused with ``SourceError``, not probed).

When it runs: only while ``aiohttp`` is not in ``sys.modules`` (``needed``). The probe exists to
skip that import; once aiohttp is loaded (the sidecar imports it for its HTTP server, init after
a reachable registry) it would save nothing and only cost a connection, so steady-state polls
never probe. ``probe`` is the asynchronous form, for a source's resolutions; ``probe_blocking``
is for a source's constructor, where the old module-level import used to happen (see
``pointercache.adapters.http.Preflight`` for why the first probe happens there).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import sys
import threading
from urllib.parse import urlsplit

from pointercache.adapters.addresses import AddressPolicy
from pointercache.errors import ForbiddenURI, SourceError, SourceUnavailable

DEFAULT_PORTS = {"http": 80, "https": 443}


def needed() -> bool:
    """True while aiohttp is not loaded: the only time a probe can save anything."""
    return "aiohttp" not in sys.modules


def reason(exc: BaseException) -> str:
    """A short, credential-free reason for a failed connect, chosen by type and errno."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, socket.gaierror):
        return "host name does not resolve"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"cannot connect ({errno.errorcode.get(exc.errno, str(exc.errno))})"
    return f"cannot connect ({type(exc).__name__})"


async def probe(
    host: str, port: int, seconds: float, *, peers: AddressPolicy, what: str = ""
) -> None:
    """Open and close a TCP connection to ``host:port`` within ``seconds``.

    The name is resolved once through ``peers.addresses`` (in a worker thread) and only those
    addresses are tried. Raises ``SourceUnavailable("<what>: <reason>")`` on a refusal, a DNS
    failure, a timeout or any other connect error, ``SourceError`` if ``peers`` forbids the
    peer. ``what`` is the registry's redacted name (defaults to host:port).
    """
    shown = what or f"{host}:{port}"
    try:
        async with asyncio.timeout(seconds):
            addresses = await asyncio.to_thread(peers.addresses, host, port)
            error: OSError | None = None
            for address in addresses:  # numeric: no second lookup
                try:
                    _, writer = await asyncio.open_connection(address, port)
                except OSError as exc:
                    error = exc
                    continue
                writer.close()
                with contextlib.suppress(OSError):  # a reset on close still proves it listens
                    await writer.wait_closed()
                return
            assert error is not None  # addresses() never answers an empty list
            raise error
    except ForbiddenURI as exc:
        raise SourceError(f"{shown}: {exc}") from exc
    except (OSError, TimeoutError) as exc:
        raise SourceUnavailable(f"{shown}: {reason(exc)}") from exc


def probe_blocking(
    host: str, port: int, seconds: float, *, peers: AddressPolicy, what: str = ""
) -> None:
    """``probe`` for synchronous code: the same checks and errors, bounded by ``seconds``.

    The lookup and connect run in a daemon thread joined for at most ``seconds``, so a DNS
    lookup that hangs (it ignores socket timeouts) cannot hold the caller longer; the thread is
    left behind.
    """
    shown = what or f"{host}:{port}"
    outcome: list[OSError | ForbiddenURI | None] = []

    def connect() -> None:
        try:
            error: OSError | None = None
            for address in peers.addresses(host, port):
                try:
                    socket.create_connection((address, port), timeout=seconds).close()
                except OSError as exc:  # TimeoutError included
                    error = exc
                    continue
                outcome.append(None)
                return
            assert error is not None
            outcome.append(error)
        except (OSError, ForbiddenURI) as exc:  # socket.gaierror included
            outcome.append(exc)

    thread = threading.Thread(target=connect, name="pointercache-netprobe", daemon=True)
    thread.start()
    thread.join(seconds)
    if not outcome:
        raise SourceUnavailable(f"{shown}: timed out")
    failed = outcome[0]
    if isinstance(failed, ForbiddenURI):
        raise SourceError(f"{shown}: {failed}") from failed
    if failed is not None:
        raise SourceUnavailable(f"{shown}: {reason(failed)}") from failed


def target(url: str) -> tuple[str, int] | None:
    """``(host, port)`` an ``http(s)://`` URL connects to; None if it cannot be worked out."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port or DEFAULT_PORTS.get(scheme)
    except ValueError:  # a malformed port: let the HTTP client report it as it always has
        return None
    if not parts.hostname or port is None:
        return None
    return parts.hostname, port
