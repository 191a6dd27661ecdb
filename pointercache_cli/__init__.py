"""The ``pointercache`` command: one CLI for both roles and the tools around them.

Subcommands are dispatched by name; each imports only what it needs, so ``pointercache init``
starts fast (no aiohttp server, no boto3, no kubernetes unless a URI asks for them).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

COMMANDS: dict[str, tuple[str, str]] = {
    "init": ("initcontainer.main", "resolve, stage, verify and publish a model, then exit"),
    "sidecar": ("sidecar.main", "keep the published model current and serve /status"),
    "status": ("pointercache_cli.tools", "show a sidecar's status as a table (or JSON)"),
    "read": ("pointercache_cli.tools", "print the pointer of the model published on a volume"),
    "wait": ("pointercache_cli.tools", "wait until a model is published on a volume"),
    "fleet": ("pointercache_cli.fleet_cmds", "show the versions pods serve; gate on skew"),
    "promote": (
        "pointercache_cli.fleet_cmds",
        "wait for the fleet to stage a version, move the alias",
    ),
    "loaded": (
        "pointercache_cli.loaded_cmd",
        "tell the sidecar which version the model container has loaded",
    ),
    "publish": (
        "pointercache_cli.publish_cmds",
        "register a model version: durable outbox first, then the registry",
    ),
    "outbox": (
        "pointercache_cli.publish_cmds",
        "list, drain or keep draining an outbox (exactly once, in order)",
    ),
    "demo": ("pointercache_cli.demo", "run the embedded end-to-end scenario (no cluster)"),
}

USAGE = "usage: pointercache {" + ",".join(COMMANDS) + "} [options]\n"


def _help() -> str:
    lines = [USAGE, "Make the model registry a soft dependency of every model-serving pod.", ""]
    lines += [f"  {name:<8} {text}" for name, (_, text) in COMMANDS.items()]
    lines += ["", "Run 'pointercache COMMAND --help' for the flags of a command."]
    return "\n".join(lines) + "\n"


def _top_level(args: list[str]) -> int | None:
    """Answer a bare call, ``--help`` or ``--version``; None when a command was named."""
    if not args:
        sys.stderr.write(_help())
        return 2
    if args[0] in {"-h", "--help"}:
        sys.stdout.write(_help())
        return 0
    if args[0] == "--version":
        from importlib.metadata import version

        sys.stdout.write(f"pointercache {version('pointercache')}\n")
        return 0
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch to a subcommand; return its exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    answered = _top_level(args)
    if answered is not None:
        return answered
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        sys.stderr.write(f"{USAGE}pointercache: unknown command {name!r}\n")
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    if module.__name__ == "pointercache_cli.tools":
        return int(module.run(name, rest))
    if module.__name__ in {"pointercache_cli.fleet_cmds", "pointercache_cli.publish_cmds"}:
        return int(getattr(module, name)(rest))
    return int(module.main(rest))
