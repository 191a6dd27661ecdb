"""``pointercache fleet`` and ``pointercache promote``: the fleet view and two-phase promotion."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from pointercache.errors import ConfigError, PointercacheError

if TYPE_CHECKING:
    from pointercache.adapters.kube.client import KubeClient

FLEET_HELP = """\
Show the pods of a workload with the model version each publishes and each model container has
loaded, digest, source, staged versions and staleness (their pointercache.dev/* annotations),
and name the pods whose model container does not serve the published version. Exit 1 when the
ready pods serve more distinct versions than --max-skew allows, so it can gate a rollout in CI.
"""

PROMOTE_HELP = """\
Two-phase promotion: wait until every ready pod (or --min-ready of them) reports VERSION staged
(sidecars with --prefetch-selector alias:candidate prestage it), then move the alias in the
registry (file:// manifest or MLflow) with a higher revision. On timeout, nothing moves and the
pods that are not ready are named. With --wait loaded it then waits (another --timeout) until
every ready pod's model container has loaded VERSION, and names those that have not.
"""


def _common(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    parser.add_argument("--namespace", "-n", required=required, help="namespace of the pods")
    parser.add_argument("--selector", "-l", required=required, help="label selector of the pods")


def _kube() -> KubeClient:
    from pointercache.adapters.kube.client import KubeConfig, api

    return api(KubeConfig.from_environ(os.environ))


def fleet(argv: Sequence[str]) -> int:
    """Print the fleet table; exit 1 when skew exceeds ``--max-skew``."""
    from pointercache.fleet import view as core

    parser = argparse.ArgumentParser(
        prog="pointercache fleet", description=FLEET_HELP, allow_abbrev=False
    )
    _common(parser)
    parser.add_argument(
        "--max-skew",
        type=int,
        default=None,
        help="largest allowed number of extra versions among ready pods",
    )
    parser.add_argument(
        "--by",
        choices=("loaded", "published"),
        default=None,
        help="count skew on the versions model containers loaded or on the published ones "
        "(default: loaded when any pod reports a load)",
    )
    parser.add_argument("--json", action="store_true", help="print rows as JSON")
    args = parser.parse_args(argv)
    try:
        rows = core.collect(args.namespace, args.selector, client=_kube())
    except PointercacheError as exc:
        print(f"pointercache fleet: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ConfigError) else 1
    if args.json:
        data = [dataclasses.asdict(r) for r in rows]
        sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2, default=str).decode())
        sys.stdout.write("\n")
    by = args.by or core.default_by(rows)
    if not args.json:
        sys.stdout.write(core.render_table(rows, by))
    code = core.skew_exit_code(rows, args.max_skew, by)
    if code:
        print(
            f"pointercache fleet: skew {core.skew(rows, by)} (by {by}) exceeds "
            f"--max-skew {args.max_skew}",
            file=sys.stderr,
        )
    return code


def _promote_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pointercache promote", description=PROMOTE_HELP, allow_abbrev=False
    )
    parser.add_argument("--model", required=True, help="registered model name")
    parser.add_argument("--to", required=True, dest="version", help="version to promote")
    parser.add_argument("--alias", default="production", help="alias to move")
    parser.add_argument(
        "--registry",
        help="file:// manifest or mlflow+http(s):// registry; without it, only wait for the fleet",
    )
    parser.add_argument("--registry-token-file", type=Path, help="bearer token for MLflow")
    parser.add_argument(
        "--registry-basic-auth-file", type=Path, help="user:password for MLflow (basic auth)"
    )
    _common(parser, required=False)
    parser.add_argument(
        "--min-ready",
        type=int,
        default=None,
        help="ready pods that must have it staged (default: all ready pods)",
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait")
    parser.add_argument(
        "--no-wait",
        action="store_true",
        help="move the alias without waiting (then -n and -l are not needed)",
    )
    parser.add_argument(
        "--wait",
        choices=("staged", "loaded"),
        default="staged",
        help="staged: wait for the fleet to stage VERSION before moving the alias (default); "
        "loaded: also wait, after it, until every ready pod has loaded VERSION",
    )
    return parser


def _check_promote(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Cross-flag rules; ``parser.error`` (exit 2) names the flag."""
    if not args.no_wait and not (args.namespace and args.selector):
        parser.error("--namespace/-n and --selector/-l are required unless --no-wait is given")
    if args.wait == "loaded" and not (args.namespace and args.selector):
        parser.error("--wait loaded needs --namespace/-n and --selector/-l to watch the pods")
    if args.no_wait and not args.registry:
        parser.error("--no-wait needs --registry: there is nothing else to do")
    if args.registry_token_file and args.registry_basic_auth_file:
        parser.error("give --registry-token-file or --registry-basic-auth-file, not both")
    for flag, path in (
        ("--registry-token-file", args.registry_token_file),
        ("--registry-basic-auth-file", args.registry_basic_auth_file),
    ):
        if path is not None and not path.is_file():
            parser.error(f"{flag} {path}: not a readable file")


def promote(argv: Sequence[str]) -> int:
    """Wait for the fleet to stage VERSION, then move the alias."""
    parser = _promote_parser()
    args = parser.parse_args(argv)
    _check_promote(parser, args)
    if not args.no_wait:
        from pointercache.fleet.view import wait_staged

        try:
            report = wait_staged(
                args.namespace,
                args.selector,
                args.version,
                args.min_ready,
                args.timeout,
                client=_kube(),
            )
        except PointercacheError as exc:
            print(f"pointercache promote: {exc}", file=sys.stderr)
            return 1
        print(report.summary())
        if not report.ok:
            return 1
    if args.registry:
        code = _move(args)
        if code:
            return code
    if args.wait == "loaded":
        return _wait_loaded(args)
    return 0


def _wait_loaded(args: argparse.Namespace) -> int:
    """After the move: every ready pod (or --min-ready) has loaded the version, or name them."""
    from pointercache.fleet.view import wait_for

    try:
        report = wait_for(
            args.namespace,
            args.selector,
            args.version,
            args.min_ready,
            args.timeout,
            stage="loaded",
            client=_kube(),
        )
    except PointercacheError as exc:
        print(f"pointercache promote: {exc}", file=sys.stderr)
        return 1
    print(report.summary())
    return 0 if report.ok else 1


def _move(args: argparse.Namespace) -> int:
    """Move the alias in the registry; the exit code."""
    from pointercache.adapters.http import Credentials
    from pointercache.fleet.promote import move_alias
    from pointercache.resolve.sources import SourceOptions

    credentials = Credentials(
        token_file=args.registry_token_file, basic_auth_file=args.registry_basic_auth_file
    )
    options = SourceOptions(timeout=10.0, credentials=credentials)
    try:
        revision = asyncio.run(
            move_alias(args.registry, args.model, args.alias, args.version, options)
        )
    except PointercacheError as exc:
        print(f"pointercache promote: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ConfigError) else 1
    print(f"{args.model}: alias {args.alias} -> version {args.version} (revision {revision})")
    return 0
