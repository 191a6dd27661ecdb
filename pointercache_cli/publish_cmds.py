"""``pointercache publish`` and ``pointercache outbox``: the durable write path to a registry.

Flags first, then ``POINTERCACHE_<FLAG>`` environment variables (``--outbox`` ↔
``POINTERCACHE_OUTBOX``; not ``--tag``). Exit codes: 0 registered or queued (publish), drained
(outbox); 1 the outbox cannot be written or read, a registration was rejected, or entries are
still pending when a drain ends; 2 bad input (nothing was queued).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from pointercache.base.log import log
from pointercache.errors import ConfigError, OutboxError, PointercacheError

PUBLISH_HELP = """\
Register a model version through a registry outage. The registration is written durably into
the outbox (SQLite, fsynced) first, then the registry is tried once within --registry-timeout.
Prints 'registered' or 'queued' (exit 0); queued entries are registered later by 'pointercache
outbox drain' or 'outbox run', exactly once and in publish order. Exit 1 if the outbox cannot be
written or the registry holds another artifact under VERSION ('rejected'); exit 2 on bad input.
For MLflow, VERSION is kept as the tag pointercache.version (MLflow numbers versions itself) and
only the signature's 'preprocessing' is written (the inputs live in the model's MLmodel file).
Every flag but --tag has a POINTERCACHE_<FLAG> environment equivalent; flags win.
"""

OUTBOX_HELP = """\
Work on an outbox: 'list' shows each entry's state, attempts and last error; 'drain' applies the
queued entries (one pass, or with --until-empty retried with jittered exponential backoff until
none is left or --timeout passes); 'run' drains forever (a sidecar of a training or CI job) and
exits 0 on SIGTERM. Exit 1 when entries stay pending or were rejected. Every flag but
--until-empty has a POINTERCACHE_<FLAG> environment equivalent (POINTERCACHE_OUTBOX...);
flags win.
"""

DEFAULT_TIMEOUT = 5.0
ENV_PREFIX = "POINTERCACHE_"


def _registry_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--registry-timeout",
        type=float,
        metavar="SECONDS",
        help=f"seconds one registration may take at the registry (default: {DEFAULT_TIMEOUT})",
    )
    parser.add_argument(
        "--registry-token-file", type=Path, metavar="FILE", help="bearer token for MLflow"
    )
    parser.add_argument(
        "--registry-basic-auth-file", type=Path, metavar="FILE", help="user:password for MLflow"
    )
    parser.add_argument("--outbox", type=Path, metavar="DIR", help="outbox directory (required)")
    parser.add_argument("--output", choices=("text", "json"), help="output format (default: text)")
    parser.add_argument(
        "--log-level", choices=("debug", "info", "warning", "error"), help="(default: warning)"
    )


def _publish_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pointercache publish", description=PUBLISH_HELP, allow_abbrev=False
    )
    parser.add_argument("--model", metavar="NAME", help="registered model name (required)")
    parser.add_argument("--version", metavar="VERSION", help="version name (required)")
    parser.add_argument("--uri", metavar="URI", help="artifact URI (required)")
    parser.add_argument("--digest", metavar="sha256:HEX", help="digest of the artifact")
    parser.add_argument(
        "--digest-from",
        type=Path,
        metavar="PATH",
        help="compute --digest (and --size-bytes) from this local file or directory",
    )
    parser.add_argument("--size-bytes", type=int, metavar="BYTES", help="size of the artifact")
    parser.add_argument(
        "--signature", type=Path, metavar="FILE", help="JSON file with the input signature"
    )
    parser.add_argument("--alias", metavar="NAME", help="alias to move to this version")
    parser.add_argument(
        "--tag", action="append", default=[], metavar="KEY=VALUE", help="version tag, repeatable"
    )
    parser.add_argument("--registry", metavar="URI", help=_REGISTRY_HELP)
    _registry_flags(parser)
    return parser


_REGISTRY_HELP = (
    "registry to register with (required): mlflow+http(s)://host:port, file:///path/m.json, "
    "s3://bucket/key.json or configmap://namespace/name"
)


def _outbox_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pointercache outbox", description=OUTBOX_HELP, allow_abbrev=False
    )
    parser.add_argument("action", choices=("list", "drain", "run"))
    _registry_flags(parser)
    parser.add_argument(
        "--until-empty", action="store_true", help="drain: retry with backoff until none is left"
    )
    parser.add_argument(
        "--timeout", type=float, metavar="SECONDS", help="drain --until-empty: give up after this"
    )
    parser.add_argument(
        "--poll-interval", type=float, metavar="SECONDS", help="run: idle look-ups (default: 2)"
    )
    parser.add_argument(
        "--backoff-initial", type=float, metavar="SECONDS", help="first retry wait (default: 0.5)"
    )
    parser.add_argument(
        "--backoff-max", type=float, metavar="SECONDS", help="longest retry wait (default: 30)"
    )
    return parser


def _merge_env(
    args: argparse.Namespace, parser: argparse.ArgumentParser, env: Mapping[str, str]
) -> argparse.Namespace:
    """Fill flags not given on the command line from ``POINTERCACHE_<FLAG>``."""
    for action in parser._actions:  # noqa: SLF001 - argparse exposes no public list
        if not action.option_strings or action.dest in {"help", "tag", "until_empty"}:
            continue
        name = ENV_PREFIX + action.dest.upper()
        if getattr(args, action.dest, None) is None and name in env:
            convert: Any = action.type or str
            try:
                setattr(args, action.dest, convert(env[name]))
            except ValueError as exc:
                raise ConfigError(f"{name}={env[name]!r}: {exc}") from None
    return args


def _require(args: argparse.Namespace, *names: str) -> None:
    for name in names:
        if getattr(args, name) in (None, ""):
            flag = "--" + name.replace("_", "-")
            raise ConfigError(f"{flag} is required (or {ENV_PREFIX}{name.upper()})")


def _options(args: argparse.Namespace) -> Any:
    from pointercache.adapters.http import Credentials
    from pointercache.adapters.kube.config import KubeConfig
    from pointercache.resolve.sources import SourceOptions

    timeout = args.registry_timeout if args.registry_timeout is not None else DEFAULT_TIMEOUT
    if timeout <= 0:
        raise ConfigError("--registry-timeout must be positive")
    return SourceOptions(
        timeout=timeout,
        credentials=Credentials(args.registry_token_file, args.registry_basic_auth_file),
        kube=KubeConfig.from_environ(os.environ),
    )


def _emit(args: argparse.Namespace, doc: dict[str, Any], text: str) -> None:
    if args.output == "json":
        sys.stdout.write(orjson.dumps(doc).decode() + "\n")
    else:
        sys.stdout.write(text + "\n")


def _fail(command: str, exc: PointercacheError) -> int:
    print(f"pointercache {command}: {exc}", file=sys.stderr)
    return 2 if isinstance(exc, ConfigError) else 1


def publish(argv: Sequence[str]) -> int:
    """Queue a registration durably, try the registry once; the exit code."""
    parser = _publish_parser()
    args = parser.parse_args(argv)
    try:
        _merge_env(args, parser, os.environ)
        log.configure(level=args.log_level or "warning", component="publish")
        from pointercache_cli.publish_input import registration_from

        registration = registration_from(args)
        _require(args, "registry", "outbox")
        options = _options(args)
        from pointercache.publish.registrars import open_registrar

        registrar = open_registrar(args.registry, options)  # checks the URI, contacts nothing
    except PointercacheError as exc:
        return _fail("publish", exc)
    try:
        entry, note = asyncio.run(_publish(args, options, registrar, registration))
    except OutboxError as exc:
        return _fail("publish", exc)
    from pointercache_cli.publish_input import entry_doc, entry_line

    _emit(args, {**entry_doc(entry), "note": note}, entry_line(entry, args.outbox, note))
    return 1 if entry.state == "rejected" else 0


async def _publish(
    args: argparse.Namespace, options: Any, registrar: Any, registration: Any
) -> Any:
    from pointercache.publish.drain import Drainer
    from pointercache.publish.drain import publish as publish_entry
    from pointercache.publish.outbox import Outbox

    with Outbox(args.outbox) as outbox:
        drainer = Drainer(outbox, options, opener=lambda _uri, _opts: registrar)
        try:
            entry = await publish_entry(drainer, args.registry, registration)
        finally:
            await drainer.aclose()
        note = None
        if entry.state == "queued" and entry.last_error is None:
            blocking = outbox.blocking(entry)
            note = (
                f"held back behind seq {blocking.seq} (the same model, published earlier)"
                if blocking is not None
                else "another drainer holds the outbox"
            )
        return entry, note


def outbox(argv: Sequence[str]) -> int:
    """``outbox list | drain | run``; the exit code."""
    parser = _outbox_parser()
    args = parser.parse_args(argv)
    try:
        _merge_env(args, parser, os.environ)
        log.configure(level=args.log_level or "info", component="outbox")
        _require(args, "outbox")
        options = _options(args)
        from pointercache.publish.drain import backoff

        initial = args.backoff_initial if args.backoff_initial is not None else 0.5
        maximum = args.backoff_max if args.backoff_max is not None else 30.0
        if initial <= 0 or maximum < initial:
            raise ConfigError("--backoff-initial must be positive and at most --backoff-max")
        from pointercache_cli.publish_input import run_outbox

        return run_outbox(args, options, backoff(initial, maximum))
    except PointercacheError as exc:
        return _fail(f"outbox {args.action}", exc)


def install_sigterm(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` on SIGTERM or SIGINT (the process may be PID 1 in a pod)."""
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, task.cancel)


__all__ = ["install_sigterm", "outbox", "publish"]
