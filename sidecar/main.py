"""Entry point of the sidecar: parse settings, build the option groups, run the service.

One ``asyncio.run`` of ``pointercache.service.app.run`` (the status server beside the refresh
loop; SIGTERM and SIGINT stop both gracefully, the process may be PID 1).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import replace

from pointercache.adapters.kube.config import KubeConfig
from pointercache.base.log import log
from pointercache.errors import ConfigError, PointercacheError
from pointercache.model.uris import configmap_target
from pointercache.service import app
from pointercache.service.app import ServerOptions
from pointercache.service.loaded import LoadOptions
from pointercache.service.refresher import RefreshOptions
from pointercache.service.reporting import KubeReporter, ReportOptions
from pointercache.sync.settings import SIDECAR, Settings, add_arguments, from_namespace
from pointercache.sync.watchdog import exit_within, run_detached
from pointercache.sync.wiring import build

DESCRIPTION = """\
Watch the registries, prestage and verify each new version, flip the shared volume's `current`
link atomically, persist the last-known-good pointer, call the model server's reload hooks,
and serve /healthz, /startupz, /readyz, /status, /metrics, POST /refresh and POST /loaded. A
refresh error never stops it: the last good version stays served.
"""


def build_parser(prog: str = "pointercache sidecar") -> argparse.ArgumentParser:
    """The sidecar's flags (each with its POINTERCACHE_* environment name)."""
    parser = argparse.ArgumentParser(prog=prog, description=DESCRIPTION, allow_abbrev=False)
    add_arguments(parser, SIDECAR)
    return parser


def report_options(settings: Settings) -> ReportOptions:
    """Where to report, from the flags (validated: --report-to-pod needs the pod's identity)."""
    pod = None
    if settings.report_to_pod and settings.pod_name and settings.pod_namespace:
        pod = (settings.pod_namespace, settings.pod_name)
    cluster = configmap_target(settings.lkg_configmap) if settings.lkg_configmap else None
    return ReportOptions(pod=pod, cluster_lkg=cluster, selector=settings.selector)


async def serve(settings: Settings, kube: KubeConfig) -> int:
    """Wire the sidecar from its settings and run it until SIGTERM/SIGINT."""
    from sidecar import telemetry as sdk

    instruments, render, provider = sdk.setup(settings.model)
    parts = build(settings, kube=kube)
    parts = replace(parts, fetch=replace(parts.fetch, downloaded=instruments.downloaded))
    refresh = RefreshOptions(
        poll_interval=settings.poll_interval,
        poll_jitter=settings.poll_jitter,
        prefetch=settings.prefetch_selector,
        stale_grace=settings.stale_grace,
    )
    server = ServerOptions(listen=settings.listen, admin_token_file=settings.admin_token_file)
    loads = LoadOptions(
        on_flip=settings.on_flip_url,
        probe=settings.loaded_probe_url,
        timeout=settings.on_flip_timeout,
        ready_when=settings.ready_when,
    )
    try:
        return await app.run(
            parts,
            refresh,
            server,
            telemetry=instruments,
            metrics=render,
            reporter=KubeReporter.build(report_options(settings), kube),
            loads=loads,
            lock_timeout=settings.poll_interval,
        )
    finally:
        provider.shutdown()


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run the sidecar; return the process exit code."""
    args = build_parser().parse_args(argv)
    env = os.environ if environ is None else environ
    try:
        settings = from_namespace(args, SIDECAR, env)
        log.configure(level=settings.log_level, component="sidecar")
        code = run_detached(serve(settings, KubeConfig.from_environ(env)))
    except ConfigError as exc:
        log.error("config-error", reason=str(exc))
        print(f"pointercache sidecar: configuration: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    except PointercacheError as exc:
        log.error("sidecar-failed", reason=str(exc))
        print(f"pointercache sidecar: {exc}", file=sys.stderr)  # noqa: T201
        return 1
    exit_within(code)  # a worker thread stuck in a read must not hold the exit after SIGTERM
    return code
