"""The ``pointercache`` command itself: usage, unknown commands, version, metavars."""

from __future__ import annotations

import subprocess

from tests.e2e.helpers import cli


def run(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI and capture its output."""
    return subprocess.run(cli(*args), capture_output=True, text=True, timeout=60, check=False)


def test_bare_call_prints_usage_on_stderr_and_exits_2() -> None:
    """Without a command the usage goes to stderr with exit 2; --help goes to stdout, exit 0."""
    bare = run()
    assert (bare.returncode, bare.stdout) == (2, "")
    assert "usage: pointercache" in bare.stderr
    helped = run("--help")
    assert helped.returncode == 0
    assert "promote" in helped.stdout


def test_unknown_command_and_version() -> None:
    """An unknown command exits 2 naming it; --version prints the package version."""
    unknown = run("frob")
    assert unknown.returncode == 2
    assert "unknown command 'frob'" in unknown.stderr
    assert run("--version").stdout.startswith("pointercache 0.")


def test_help_says_what_each_value_looks_like() -> None:
    """Flags show their unit or shape (SECONDS, BYTES, FILE, HOST:PORT), not their field name."""
    out = run("sidecar", "--help").stdout
    for shown in (
        "--registry-timeout SECONDS",
        "--max-artifact-bytes BYTES",
        "--admin-token-file FILE",
        "--listen HOST:PORT",
        "--poll-jitter FRACTION",
    ):
        assert shown in out
    assert "REGISTRY_TIMEOUT\n" not in out
