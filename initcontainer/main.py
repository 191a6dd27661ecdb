"""Entry point of the init container: parse settings, run the one shot, return an exit code.

Exit 0: a verified model is published. Exit 1: nothing could be resolved (the one-line reason is
on stderr and in the termination log). Exit 2: bad configuration. Whatever blocks, the process
ends by ``--deadline`` + ``WATCHDOG_SLACK`` seconds: a watchdog thread writes the termination log
and exits if the one shot has not returned by then (``pointercache.sync.watchdog``).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from pointercache.adapters.kube.config import KubeConfig
from pointercache.base.log import log
from pointercache.errors import ConfigError, PointercacheError
from pointercache.sync import bootstrap
from pointercache.sync.budget import Budget
from pointercache.sync.settings import INIT, add_arguments, from_namespace
from pointercache.sync.watchdog import Watchdog, run_detached
from pointercache.sync.wiring import build

WATCHDOG_SLACK = 0.75
"""Seconds past ``--deadline`` at which the watchdog ends a one shot that has not returned."""

DESCRIPTION = """\
Resolve which model version to serve (registries in order, then the node's last-known-good,
then the cluster's, then the pinned version), stage and verify its artifact on the shared
volume, publish it atomically, and exit. The pod becomes ready without a live registry.
"""


def build_parser(prog: str = "pointercache init") -> argparse.ArgumentParser:
    """The init container's flags (each with its POINTERCACHE_* environment name)."""
    parser = argparse.ArgumentParser(prog=prog, description=DESCRIPTION, allow_abbrev=False)
    add_arguments(parser, INIT)
    return parser


def write_termination_log(path: Path, reason: str) -> None:
    """Write the one-line reason where the kubelet reads it; skip silently if not writable.

    Opened without blocking (a FIFO nobody reads is skipped, not waited on).
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o644)
    except OSError:
        return
    try:
        os.write(fd, (reason[:4000] + "\n").encode("utf-8", "replace"))
    except OSError:
        return
    finally:
        os.close(fd)


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run the init container; return the process exit code."""
    args = build_parser().parse_args(argv)
    env = os.environ if environ is None else environ
    # Known before the settings validate, so a configuration error is written there too.
    termination_log = args.termination_log or Path(
        env.get("POINTERCACHE_TERMINATION_LOG", "/dev/termination-log")
    )
    try:
        settings = from_namespace(args, INIT, env)
    except ConfigError as exc:
        return _fail(2, f"configuration: {exc}", termination_log)
    termination_log = settings.termination_log
    log.configure(level=settings.log_level, component="init")
    deadline = settings.deadline
    budget = Budget(deadline)  # the deadline counts from here, wiring included
    reason = f"deadline of {deadline:g}s passed before a model was published (watchdog)"
    watchdog = Watchdog(deadline + WATCHDOG_SLACK, lambda: _report(reason, termination_log))
    watchdog.start()
    try:
        parts = build(settings, kube=KubeConfig.from_environ(env))
        pointer = run_detached(bootstrap.run_once(parts, deadline=deadline, budget=budget))
    except ConfigError as exc:
        watchdog.settle(2)
        return _fail(2, f"configuration: {exc}", termination_log)
    except PointercacheError as exc:
        watchdog.settle(1)
        return _fail(1, str(exc), termination_log)
    except Exception as exc:  # a bug: still one line, never a traceback
        watchdog.settle(1)
        return _fail(1, f"internal error: {type(exc).__name__}: {exc}", termination_log)
    watchdog.settle(0)
    log.info(
        "init-done",
        model=pointer.model,
        version=pointer.version,
        digest=pointer.digest,
        source=pointer.source,
        detail=pointer.source_detail,
    )
    return 0


def _report(reason: str, termination_log: Path) -> None:
    _fail(1, reason, termination_log)


def _fail(code: int, reason: str, termination_log: Path) -> int:
    from pointercache.base.redact import redact_text

    line = redact_text(" ".join(reason.split()))
    log.error("init-failed", reason=line, exit_code=code)
    write_termination_log(termination_log, line)
    print(f"pointercache init: {line}", file=sys.stderr)  # noqa: T201
    return code
