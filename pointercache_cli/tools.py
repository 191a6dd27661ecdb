"""``pointercache read``, ``wait`` and ``status``: look at a volume or a sidecar."""

from __future__ import annotations

import argparse
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from pointercache import reader
from pointercache.errors import PointercacheError

DEFAULT_ROOT = Path("/pointercache")


def _parser(name: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"pointercache {name}", allow_abbrev=False)
    if name in {"read", "wait"}:
        parser.add_argument(
            "--root",
            type=Path,
            default=DEFAULT_ROOT,
            help=f"shared volume root (default: {DEFAULT_ROOT})",
        )
    if name == "read":
        parser.add_argument("--field", help="print one pointer field (e.g. version, digest)")
    if name == "wait":
        parser.add_argument(
            "--timeout",
            type=float,
            default=None,
            help="give up after this many seconds (exit 1); default: wait forever",
        )
    if name == "status":
        parser.add_argument(
            "--url", default="http://127.0.0.1:8787", help="base URL of the sidecar's status server"
        )
        parser.add_argument("--json", action="store_true", help="print the raw JSON")
        parser.add_argument("--timeout", type=float, default=5.0, help="request timeout (s)")
    return parser


def run(name: str, argv: Sequence[str]) -> int:
    """Run ``read``, ``wait`` or ``status``; return the exit code."""
    args = _parser(name).parse_args(argv)
    try:
        if name == "read":
            return _read(args)
        if name == "wait":
            return _wait(args)
        return _status(args)
    except PointercacheError as exc:
        print(f"pointercache {name}: {exc}", file=sys.stderr)
        return 1


def _read(args: argparse.Namespace) -> int:
    loaded = reader.current(args.root)
    if loaded is None:
        print(f"pointercache read: no model published under {args.root}", file=sys.stderr)
        return 1
    data = loaded.pointer.to_dict()
    if args.field:
        if args.field not in data:
            print(f"pointercache read: no field {args.field!r}", file=sys.stderr)
            return 2
        print(data[args.field])
    else:
        sys.stdout.write(loaded.pointer.to_json().decode())
    return 0


def _wait(args: argparse.Namespace) -> int:
    try:
        loaded = reader.wait(args.root, timeout=args.timeout)
    except TimeoutError:
        print(
            f"pointercache wait: no model published under {args.root} after {args.timeout:g}s",
            file=sys.stderr,
        )
        return 1
    print(f"{loaded.pointer.model} {loaded.pointer.version} {loaded.pointer.digest}")
    return 0


def _status(args: argparse.Namespace) -> int:
    url = args.url.rstrip("/") + "/status"
    try:
        with urllib.request.urlopen(url, timeout=args.timeout) as resp:  # noqa: S310
            doc = orjson.loads(resp.read())
    except (urllib.error.URLError, OSError, orjson.JSONDecodeError) as exc:
        print(f"pointercache status: cannot read {url}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        sys.stdout.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        sys.stdout.write(render_status(doc))
    return 0 if doc.get("ready") else 1


def _in_flight(flight: dict[str, Any] | None) -> str:
    """``2 downloading 1.0 KiB of 10.0 MiB, 12 B/s, idle 2s`` (or ``-``)."""
    if not flight:
        return "-"
    total = flight.get("total")
    of = f" of {total} B" if total else ""
    return (
        f"{flight.get('version')} {flight.get('phase')} {flight.get('bytes')} B{of}, "
        f"{flight.get('rate_bytes_per_s')} B/s, idle {flight.get('idle_s')}s"
    )


def _held(entry: dict[str, Any]) -> str:
    return f"{entry.get('version')} ({entry.get('failures')}x, retry in {entry.get('retry_in_s')}s)"


def render_status(doc: dict[str, Any]) -> str:
    """A short, readable table of a ``/status`` document."""
    cur = doc.get("current") or {}
    reg = doc.get("registry") or {}
    stale = doc.get("staleness_seconds")
    loaded = doc.get("loaded") or {}
    reload = doc.get("reload") or {}
    rows = [
        ("model", doc.get("model", "")),
        ("ready", "yes" if doc.get("ready") else "NO"),
        ("version", cur.get("version", "-")),
        ("digest", (cur.get("digest") or "-")[:19]),
        ("source", f"{cur.get('source', '-')} ({cur.get('source_detail', '')})"),
        ("revision", cur.get("revision", "-")),
        ("staleness", "-" if stale is None else f"{stale:.1f}s"),
        ("last error", reg.get("last_error") or "-"),
        ("fallback", doc.get("fallback_reason") or "-"),
        ("blocked", (doc.get("blocked") or {}).get("reason", "-")),
        ("in-flight", _in_flight(doc.get("in_flight"))),
        ("held-off", ", ".join(_held(h) for h in doc.get("held_off") or []) or "-"),
        ("staged", ", ".join(s.get("version", "?") for s in doc.get("staged", [])) or "-"),
        ("loaded", _loaded_cell(loaded)),
        ("reload", _reload_cell(reload)),
    ]
    width = max(len(k) for k, _ in rows)
    return "".join(f"{k:<{width}}  {v}\n" for k, v in rows)


def _loaded_cell(loaded: dict[str, Any]) -> str:
    if not loaded:
        return "- (the model container has reported no load)"
    mark = f"{loaded.get('version', '?')} via {loaded.get('via', '?')} at {loaded.get('at', '?')}"
    return mark if loaded.get("current") else f"{mark} (NOT the published version)"


def _reload_cell(reload: dict[str, Any]) -> str:
    if not reload:
        return "-"
    cell = f"{reload.get('version', '?')} {reload.get('state', '?')}"
    seconds = reload.get("flip_to_loaded_seconds")
    if seconds is not None:
        cell += f" in {seconds:.2f}s"
    if reload.get("error"):
        cell += f": {reload['error']}"
    return cell
