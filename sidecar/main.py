"""Entry point of the sidecar: parse settings, wire the refresher and the status server, run.

One ``asyncio.run``; the aiohttp runner with ``handle_signals=False`` beside the refresh loop;
SIGTERM and SIGINT stop both gracefully (the process may be PID 1).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from dataclasses import replace

from aiohttp import web

from pointercache.adapters.kube.client import KubeConfig
from pointercache.base.log import log
from pointercache.errors import ConfigError, PointercacheError
from pointercache.service.refresher import Refresher
from pointercache.service.reporting import KubeReporter
from pointercache.service.server import make_app
from pointercache.sync.settings import SIDECAR, Settings, add_arguments, from_namespace
from pointercache.sync.wiring import build

DESCRIPTION = """\
Watch the registries, prestage and verify each new version, flip the shared volume's `current`
link atomically, persist the last-known-good pointer, and serve /healthz, /readyz, /status,
/metrics and POST /refresh. A refresh error never stops it: the last good version stays served.
"""


def build_parser(prog: str = "pointercache sidecar") -> argparse.ArgumentParser:
    """The sidecar's flags (each with its POINTERCACHE_* environment name)."""
    parser = argparse.ArgumentParser(prog=prog, description=DESCRIPTION, allow_abbrev=False)
    add_arguments(parser, SIDECAR)
    return parser


async def serve(settings: Settings, kube: KubeConfig) -> int:
    """Run until SIGTERM/SIGINT; return the exit code."""
    from sidecar import telemetry as sdk

    instruments, render, provider = sdk.setup(settings.model)
    parts = build(settings, kube=kube)
    parts = replace(parts, fetch=replace(parts.fetch, downloaded=instruments.downloaded))
    reporter = KubeReporter.from_settings(settings, kube)
    refresher = Refresher(parts, instruments, reporter=reporter)
    store = parts.store
    await asyncio.to_thread(store.ensure_layout)
    with store.lock(timeout=settings.poll_interval):
        await asyncio.to_thread(store.recover)
        refresher.load_current()
        app = make_app(refresher, metrics=render, admin_token_file=settings.admin_token_file)
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        host, port = settings.listen_host_port
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = runner.addresses[0][1] if runner.addresses else port
        log.info("listening", host=host, port=bound)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await refresher.run(stop)
        finally:
            log.info("stopping")
            await runner.cleanup()
            await parts.aclose()
            provider.shutdown()
    return 0


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run the sidecar; return the process exit code."""
    args = build_parser().parse_args(argv)
    env = os.environ if environ is None else environ
    try:
        settings = from_namespace(args, SIDECAR, env)
        log.configure(level=settings.log_level, component="sidecar")
        return asyncio.run(serve(settings, KubeConfig.from_environ(env)))
    except ConfigError as exc:
        log.error("config-error", reason=str(exc))
        print(f"pointercache sidecar: configuration: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    except PointercacheError as exc:
        log.error("sidecar-failed", reason=str(exc))
        print(f"pointercache sidecar: {exc}", file=sys.stderr)  # noqa: T201
        return 1
