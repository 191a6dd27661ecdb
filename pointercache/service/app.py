"""Run the sidecar's service: the status server beside the refresh loop, until told to stop.

One event loop; the aiohttp ``AppRunner`` with ``handle_signals=False``; SIGTERM and SIGINT set
the stop event (the process may be PID 1), the loop ends its refresh, the server closes, the
sources close.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from pointercache.base.log import log
from pointercache.service.loaded import LoadOptions
from pointercache.service.refresher import Refresher, RefreshOptions
from pointercache.service.reporting import Reporter
from pointercache.service.server import make_app
from pointercache.service.telemetry import Telemetry
from pointercache.sync.settings import ListenAddress
from pointercache.sync.wiring import Parts


@dataclass(frozen=True, slots=True)
class ServerOptions:
    """Where the status server listens and who may force a refresh."""

    listen: ListenAddress = ListenAddress("0.0.0.0", 8787)  # noqa: S104 - the pod's address
    """``--listen``."""
    admin_token_file: Path | None = None
    """Bearer token file for ``POST /refresh`` (``--admin-token-file``); None: loopback only."""


async def run(
    parts: Parts,
    refresh: RefreshOptions,
    server: ServerOptions,
    *,
    telemetry: Telemetry,
    metrics: Callable[[], tuple[bytes, str]],
    reporter: Reporter | None = None,
    lock_timeout: float = 15.0,
    loads: LoadOptions | None = None,
) -> int:
    """Serve until SIGTERM/SIGINT; return the exit code (0).

    Takes the volume's single-writer lock (``StoreLocked`` after ``lock_timeout`` seconds),
    recovers leftovers, and reads what the init container published before the first refresh.
    """
    refresher = Refresher(parts, refresh, telemetry, reporter=reporter, loads=loads)
    store = parts.store
    await asyncio.to_thread(store.ensure_layout)
    with store.lock(timeout=lock_timeout):
        await asyncio.to_thread(store.recover)
        await refresher.load_current()
        app = make_app(refresher, metrics=metrics, admin_token_file=server.admin_token_file)
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, server.listen.host, server.listen.port)
        await site.start()
        bound = runner.addresses[0][1] if runner.addresses else server.listen.port
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):  # before "listening": a SIGTERM right
            loop.add_signal_handler(sig, stop.set)  # after it must stop us gracefully too
        log.info("listening", host=server.listen.host, port=bound)
        try:
            await refresher.run(stop)
        finally:
            log.info("stopping")
            await runner.cleanup()
            await parts.aclose()
    return 0
