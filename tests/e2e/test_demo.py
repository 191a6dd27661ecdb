"""``pointercache demo`` (what ``make demo`` runs) passes on a machine with nothing set up."""

from __future__ import annotations

import subprocess

from tests.e2e.helpers import cli


def test_demo_runs_every_step(cli_env: dict[str, str]) -> None:
    """The demo flips to v2, serves pod B from the LKG, pod C from the pinned version, fails D."""
    proc = subprocess.run(
        cli("demo"), env=cli_env, capture_output=True, text=True, timeout=180, check=False
    )
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "flipped to v2" in out
    assert "pod-b  2        lkg-node" in out
    assert "pod-c  1        pinned" in out
    assert "pod-d  -" in out and "no servable model" in out
    assert out.rstrip().endswith("or said why not")
