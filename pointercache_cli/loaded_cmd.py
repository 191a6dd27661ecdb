"""``pointercache loaded``: a model server that is not written in Python acknowledges a load."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from pointercache import reader
from pointercache.adapters.retry import Backoff, retrying
from pointercache.errors import ConfigError, LoadError, PointercacheError
from pointercache.model.loaded import Ack, Loaded
from pointercache.model.pointer import check_digest, check_name

HELP = """\
Tell the sidecar which model version the model container has loaded (POST /loaded), so
/status, the pod's annotations, `pointercache fleet` and `pointercache promote --wait loaded`
report what is really served. Without --version/--digest it acknowledges the version `current`
names now; a server that may have loaded an older one (a flip during its load) should pass the
version and digest of the pointer.json it read. Exit 0 when the sidecar recorded it, 1 when it
refused (the version is not staged on the volume: the reason is printed) or did not answer
within --timeout, 2 on bad arguments.
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pointercache loaded", description=HELP)
    parser.add_argument(
        "--url",
        default=reader.DEFAULT_SIDECAR,
        help="the sidecar's status server (default: %(default)s)",
    )
    parser.add_argument(
        "--root",
        type=Path,
        default=Path(reader.DEFAULT_ROOT),
        help="shared volume root (default: %(default)s)",
    )
    parser.add_argument("--version", help="the loaded version (default: the current one)")
    parser.add_argument("--digest", help="its sha256:<hex> digest (with --version)")
    parser.add_argument("--token-file", type=Path, help="bearer token file (from outside the pod)")
    parser.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        help="seconds to keep trying while the sidecar does not answer (default: %(default)s)",
    )
    return parser


def _ack(args: argparse.Namespace) -> Ack:
    if (args.version is None) != (args.digest is None):
        raise ConfigError("--version and --digest go together")
    if args.version is not None:
        try:
            return Ack(check_name("--version", args.version), check_digest("--digest", args.digest))
        except PointercacheError as exc:
            raise ConfigError(str(exc)) from exc
    model = reader.current(args.root)
    if model is None:
        raise LoadError(f"no model published under {args.root}")
    p = model.pointer
    return Ack(version=p.version, digest=p.digest, model=p.model)


def _send(ack: Ack, args: argparse.Namespace) -> Loaded:
    deadline = time.monotonic() + args.timeout
    for attempt in retrying(
        Backoff(attempts=1_000_000, initial=0.1, maximum=2.0),
        stop=lambda _n: time.monotonic() >= deadline,
    ):
        with attempt:
            remaining = max(0.1, deadline - time.monotonic())
            return reader.acknowledge(
                ack, url=args.url, token_file=args.token_file, timeout=min(5.0, remaining)
            )
    raise AssertionError("unreachable: retrying re-raises the last failure")  # pragma: no cover


def main(argv: Sequence[str]) -> int:
    """Acknowledge a load; return the exit code."""
    args = _parser().parse_args(argv)
    try:
        mark = _send(_ack(args), args)
    except ConfigError as exc:
        print(f"pointercache loaded: {exc}", file=sys.stderr)
        return 2
    except PointercacheError as exc:
        print(f"pointercache loaded: {exc}", file=sys.stderr)
        return 1
    print(f"loaded {mark.version} {mark.digest} ({mark.via})")
    return 0
