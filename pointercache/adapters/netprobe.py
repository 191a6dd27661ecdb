"""A cheap TCP preflight for HTTP registries, so an unreachable one costs no aiohttp import.

Importing aiohttp takes 300-450 ms (``aiohttp.connector`` builds SSL contexts at import time),
several times what the rest of ``pointercache init`` needs. When the registry cannot be reached
that work buys nothing: the chain serves from the node LKG anyway. A probe opens (and at once
closes) a plain TCP connection with the standard library, and raises ``SourceUnavailable`` with
a short reason when the registry refuses, its name does not resolve, or it does not accept in
time. It connects directly, like our aiohttp sessions (``trust_env=False``: no proxy), and checks
TCP only (no TLS handshake, no HTTP).

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

from pointercache.errors import SourceUnavailable

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


async def probe(host: str, port: int, seconds: float, *, what: str = "") -> None:
    """Open and close a TCP connection to ``host:port`` within ``seconds``.

    Raises ``SourceUnavailable("<what>: <reason>")`` on a refusal, a DNS failure, a timeout or
    any other connect error. ``what`` is the registry's redacted name (defaults to host:port).
    """
    shown = what or f"{host}:{port}"
    try:
        async with asyncio.timeout(seconds):
            _, writer = await asyncio.open_connection(host, port)
            writer.close()
            with contextlib.suppress(OSError):  # a reset on close still proves it listens
                await writer.wait_closed()
    except (OSError, TimeoutError) as exc:
        raise SourceUnavailable(f"{shown}: {reason(exc)}") from exc


def probe_blocking(host: str, port: int, seconds: float, *, what: str = "") -> None:
    """``probe`` for synchronous code: the same checks and errors, bounded by ``seconds``.

    The connect runs in a daemon thread joined for at most ``seconds``, so a DNS lookup that
    hangs (it ignores socket timeouts) cannot hold the caller longer; the thread is left behind.
    """
    shown = what or f"{host}:{port}"
    outcome: list[OSError | None] = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=seconds).close()
        except OSError as exc:  # TimeoutError and socket.gaierror included
            outcome.append(exc)
        else:
            outcome.append(None)

    thread = threading.Thread(target=connect, name="pointercache-netprobe", daemon=True)
    thread.start()
    thread.join(seconds)
    if not outcome:
        raise SourceUnavailable(f"{shown}: timed out")
    if outcome[0] is not None:
        raise SourceUnavailable(f"{shown}: {reason(outcome[0])}") from outcome[0]


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
