"""Benchmarks: scripts that print numbers and ratios (never part of the test suite).

``python -m bench`` runs every benchmark module in this package; each module also runs alone
(``python -m bench.<name>``). Helpers shared by the fetch benchmarks live here: a wall-clock
timer for commands, the child process that runs one of our fetchers (so its peak RSS is its own),
and a plain-text table.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"
REPO = OUT.parent.parent
PYTHON = sys.executable
MiB = 1 << 20


def make_random_file(path: Path, size: int) -> str:
    """Write ``size`` random bytes to ``path`` (reused when present) and return its sha256 hex."""
    digest_file = path.with_suffix(path.suffix + ".sha256")
    if path.exists() and path.stat().st_size == size and digest_file.exists():
        return digest_file.read_text().strip()
    sha = hashlib.sha256()
    with path.open("wb") as out:
        left = size
        while left:
            block = os.urandom(min(16 * MiB, left))
            out.write(block)
            sha.update(block)
            left -= len(block)
    digest_file.write_text(sha.hexdigest() + "\n")
    return sha.hexdigest()


def timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, str]:
    """Run ``cmd`` to completion; (wall seconds, stdout); its CPU seconds go to ``LAST_CPU``."""
    before = _children_cpu()
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    LAST_CPU[0] = _children_cpu() - before
    if proc.returncode != 0:
        sys.exit(f"benchmark command failed ({proc.returncode}): {cmd[:3]}\n{proc.stderr[-2000:]}")
    return elapsed, proc.stdout


LAST_CPU = [0.0]
"""CPU seconds (user + system) of the last command ``timed`` ran."""


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def fetch_in_child(
    uri: str, dest: Path, sha256: str, env: dict[str, str], *, tree_digest: bool = False
) -> tuple[float, dict[str, float]]:
    """Run our fetcher for ``uri`` in a fresh interpreter; (wall seconds, child's report)."""
    cmd = [PYTHON, "-c", "from bench import child_main; child_main()", uri, str(dest), sha256]
    if tree_digest:
        cmd.append("--tree-digest")
    wall, out = timed(cmd, env)
    return wall, json.loads(out.strip().splitlines()[-1])


def child_main() -> None:
    """Child: fetch argv[1] to argv[2], check the sha256 against argv[3], print a JSON report.

    ``fetch_s`` excludes interpreter start-up and imports (aiohttp, boto3), not the fetch.
    """
    from pointercache.model.digest import tree_digest
    from pointercache.stage.fetchers import FetchOptions, open_fetcher

    uri, dest, expected = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    fetcher = open_fetcher(uri, FetchOptions())  # imports the fetcher module
    if uri.startswith("s3://"):
        import boto3.session  # noqa: F401 - imported lazily by the fetcher; not part of fetch_s

    async def run() -> str | None:
        try:
            return (await fetcher.fetch(uri, dest)).sha256
        finally:
            await fetcher.aclose()

    start = time.perf_counter()
    digest = asyncio.run(run())
    if "--tree-digest" in sys.argv:  # what pointercache.stage.prestage does after every fetch
        digest = tree_digest(dest)[0].removeprefix("sha256:")
    seconds = time.perf_counter() - start
    if digest != expected:
        sys.exit(f"digest mismatch: {digest} != {expected}")
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"fetch_s": seconds, "rss_mib": rss_mib}))


class Results:
    """Wall times, CPU times and peak RSS per variant, over several runs."""

    def __init__(self) -> None:
        self.wall: dict[str, list[float]] = {}
        self.cpu: dict[str, list[float]] = {}
        self.rss: dict[str, float] = {}
        self.inproc: dict[str, list[float]] = {}

    def add(
        self, name: str, wall: float, cpu: float, child: dict[str, float] | None = None
    ) -> None:
        """Record one run of ``name`` (``child``: the report of ``fetch_in_child``)."""
        self.wall.setdefault(name, []).append(wall)
        self.cpu.setdefault(name, []).append(cpu)
        if child is not None:
            self.rss[name] = max(self.rss.get(name, 0.0), child["rss_mib"])
            self.inproc.setdefault(name, []).append(child["fetch_s"])

    def rows(self, base: str, size_mib: int) -> list[list[str]]:
        """Table rows: medians, throughput, peak RSS and the ratio base / variant (wall)."""
        ref = statistics.median(self.wall[base])
        rows = []
        for name, values in self.wall.items():
            wall = statistics.median(values)
            rss = f"{self.rss[name]:.0f}" if name in self.rss else "-"
            cpu = statistics.median(self.cpu[name])
            inproc = self.inproc.get(name)
            rows.append(
                [
                    name,
                    f"{wall:.2f}",
                    f"{size_mib / wall:.0f}",
                    f"{cpu:.2f}",
                    rss,
                    f"{statistics.median(inproc):.2f}" if inproc else "-",
                    f"{ref / wall:.2f}x",
                ]
            )
        return rows


HEADERS = ["tool", "wall s", "MiB/s", "CPU s", "peak RSS MiB", "fetch s (no start-up)"]
"""Column titles of ``Results.rows`` (add the ratio's title). The last one is the time inside
our child process, without interpreter start-up and imports."""


def print_table(title: str, headers: list[str], rows: list[list[str]]) -> None:
    """Print a left-aligned plain-text table."""
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))
