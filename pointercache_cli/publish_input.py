"""Helpers of ``pointercache publish`` / ``outbox``: flags → ``Registration``, entries → output."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from pathlib import Path
from typing import Any

import orjson

from pointercache.adapters.retry import Backoff
from pointercache.base.redact import redact_uri
from pointercache.errors import ConfigError, IntegrityError, InvalidManifest
from pointercache.model.signature import MAX_FILE_BYTES, Signature
from pointercache.publish.drain import Drainer
from pointercache.publish.outbox import Entry, Outbox, State
from pointercache.publish.registration import Registration
from pointercache.resolve.sources import SourceOptions


def _signature(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"--signature {path}: {exc.strerror}") from exc
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(f"--signature {path}: larger than {MAX_FILE_BYTES} bytes")
    try:
        return Signature.parse(orjson.loads(data)).to_dict()
    except orjson.JSONDecodeError:
        raise ConfigError(f"--signature {path}: not valid JSON") from None
    except InvalidManifest as exc:
        raise ConfigError(f"--signature {path}: {exc}") from None


def _digest(args: argparse.Namespace) -> tuple[str | None, int | None]:
    """--digest / --size-bytes, or both computed from --digest-from (the tree-digest rule)."""
    if args.digest_from is None:
        return args.digest, args.size_bytes
    if args.digest is not None:
        raise ConfigError("--digest and --digest-from exclude each other")
    from pointercache.model.digest import tree_digest

    try:
        digest, size = tree_digest(args.digest_from)
    except (OSError, IntegrityError) as exc:
        raise ConfigError(f"--digest-from {args.digest_from}: {exc}") from None
    if args.size_bytes is not None and args.size_bytes != size:
        raise ConfigError(f"--size-bytes {args.size_bytes} but --digest-from counts {size} bytes")
    return digest, size


def _tags(pairs: list[str]) -> dict[str, str]:
    tags: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ConfigError(f"--tag {pair!r}: expected KEY=VALUE")
        tags[key] = value
    return tags


def registration_from(args: argparse.Namespace) -> Registration:
    """The validated registration the publish flags describe; ``ConfigError`` names the flag."""
    for name in ("model", "version", "uri"):
        if not getattr(args, name):
            raise ConfigError(f"--{name} is required (or POINTERCACHE_{name.upper()})")
    digest, size = _digest(args)
    return Registration.build(
        model=args.model,
        version=args.version,
        uri=args.uri,
        digest=digest,
        size_bytes=size,
        signature=_signature(args.signature) if args.signature else None,
        alias=args.alias,
        tags=_tags(args.tag),
    )


def entry_doc(entry: Entry) -> dict[str, Any]:
    """The JSON form of an entry (``--output json``)."""
    reg = entry.registration
    return {
        "state": entry.state.value,
        "seq": entry.seq,
        "model": reg.model,
        "version": reg.version,
        "alias": reg.alias,
        "registry": redact_uri(entry.registry),
        "key": reg.key,
        "attempts": entry.attempts,
        "last_error": entry.last_error,
        "result": entry.result,
        "created_at": entry.created_at,
        "updated_at": entry.updated_at,
    }


def entry_line(entry: Entry, outbox: Path, note: str | None = None) -> str:
    """One line for people: the state first, then what and why."""
    reg = entry.registration
    head = f"{entry.state.value} {reg.describe()} -> {redact_uri(entry.registry)} (seq {entry.seq})"
    if entry.state is State.REGISTERED:
        return f"{head}: {entry.result}"
    if entry.state is State.REJECTED:
        return f"{head}: {entry.last_error}"
    why = note or entry.last_error or "not tried yet"
    return f"{head}: {why}; 'pointercache outbox drain --outbox {outbox}' retries it"


def _list(args: argparse.Namespace, outbox: Outbox) -> int:
    entries = outbox.entries()
    if args.output == "json":
        sys.stdout.write(orjson.dumps([entry_doc(e) for e in entries]).decode() + "\n")
        return 0
    rows = [["SEQ", "STATE", "MODEL", "VERSION", "ALIAS", "ATTEMPTS", "REGISTRY", "LAST"]]
    for e in entries:
        reg = e.registration
        last = e.result if e.state is State.REGISTERED else (e.last_error or "-")
        rows.append(
            [
                str(e.seq),
                e.state.value,
                reg.model,
                reg.version,
                reg.alias or "-",
                str(e.attempts),
                redact_uri(e.registry),
                last or "-",
            ]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [c.ljust(w) for c, w in zip(row, widths, strict=False)]
        sys.stdout.write("  ".join([*cells, row[-1]]) + "\n")
    return 0


async def _drain(args: argparse.Namespace, drainer: Drainer, policy: Backoff) -> int:
    if args.action == "run":
        from pointercache_cli.publish_cmds import install_sigterm

        poll = args.poll_interval if args.poll_interval is not None else 2.0
        task = asyncio.create_task(drainer.run(policy, poll=poll))
        install_sigterm(task)
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return 0
    timeout = (args.timeout if args.timeout is not None else 300.0) if args.until_empty else None
    if args.until_empty:
        report = await drainer.drain(policy, give_up_after=timeout)
    else:
        report = await drainer.locked_pass()
    doc = {
        "registered": len(report.registered),
        "rejected": len(report.rejected),
        "pending": report.pending,
        "errors": {str(k): v for k, v in report.failed.items()},
    }
    text = f"registered {doc['registered']}, rejected {doc['rejected']}, pending {doc['pending']}"
    if report.busy:
        text += " (another drainer holds the outbox)"
    if args.output == "json":
        sys.stdout.write(orjson.dumps(doc).decode() + "\n")
    else:
        sys.stdout.write(text + "\n")
        for seq, error in report.failed.items():
            sys.stdout.write(f"  seq {seq}: {error}\n")
    return 1 if report.pending or report.rejected else 0


def run_outbox(args: argparse.Namespace, options: SourceOptions, policy: Backoff) -> int:
    """Run ``outbox list | drain | run`` on ``args.outbox``; the exit code."""
    with Outbox(args.outbox) as outbox:
        if args.action == "list":
            return _list(args, outbox)

        async def main() -> int:
            drainer = Drainer(outbox, options)
            try:
                return await _drain(args, drainer, policy)
            finally:
                await drainer.aclose()

        return asyncio.run(main())
