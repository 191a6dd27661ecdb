"""Start-up of ``pointercache init`` with the registry down and the model in the node cache.

Each round runs ``python -c pass`` and every init case once, in turn (interleaved, so a burst of
load from other processes hits every case alike); the table shows each case's median wall time
and the median and range of its per-round ratio to ``python -c pass``. Goal: at most 6 times.

Then one ``-X importtime`` run per case lists what init imports beyond ``python -c pass``:
third-party packages by name and the standard library and pointercache modules by count, with
their summed self time (an inflated figure: importtime has overhead of its own).

Byte code is compiled first (``compileall``) and the runs may use it, as in the image (its
Dockerfile precompiles); ``PYTHONDONTWRITEBYTECODE`` in the caller's environment would otherwise
make every run compile pointercache from source.

Run: ``.venv/bin/python -m bench.startup [--runs 15]``
"""

from __future__ import annotations

import argparse
import collections
import compileall
import os
import shutil
import socket
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

from bench.init_latency import MODEL, _artifacts, _manifest


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _init_cmd(base: Path, registry: str, root: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pointercache_cli",
        "init",
        "--model",
        MODEL,
        "--lkg-dir",
        str(base / "lkg"),
        "--termination-log",
        str(base / "term"),
        "--registry",
        registry,
        "--root",
        str(root),
    ]


def _warm(base: Path) -> Path:
    """Publish once from a file manifest (fills the node LKG and cache), then remove it."""
    _artifacts(base, 1)
    manifest = base / "registry.json"
    _manifest(manifest, base, 1, "1")
    cmd = _init_cmd(base, manifest.as_uri(), base / "warm")
    subprocess.run(cmd, check=True, capture_output=True, env=ENV)
    shutil.rmtree(base / "artifacts")
    manifest.unlink()
    return manifest


ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
REPO = Path(__file__).resolve().parents[1]


def _once(cmd: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env=ENV)
    return time.perf_counter() - t


def _imports(cmd: list[str]) -> dict[str, tuple[int, int]]:
    """Top-level name → (modules, summed self µs) from one ``-X importtime`` run."""
    run = subprocess.run(
        [cmd[0], "-X", "importtime", *cmd[1:]], check=True, capture_output=True, text=True, env=ENV
    )
    found: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
    for line in run.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, _cumulative, name = line.removeprefix("import time:").split("|")
        top = name.strip().split(".")[0]
        found[top][0] += 1
        found[top][1] += int(self_us)
    return {k: (v[0], v[1]) for k, v in found.items()}


def _third_party(name: str) -> bool:
    stdlib = set(sys.stdlib_module_names) | {"_distutils_hack", "sitecustomize"}
    return name not in stdlib and not name.startswith(("__editable__", "_"))


def main(argv: list[str] | None = None) -> None:
    """Measure and print the table and the import lists."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=15, help="interleaved rounds (≥ 10)")
    args = parser.parse_args(argv)
    for package in ("pointercache", "pointercache_cli"):
        compileall.compile_dir(REPO / package, quiet=1)
    base = Path(tempfile.mkdtemp(prefix="pc-bench-startup-"))
    try:
        manifest = _warm(base)
        cases = {
            "file:// registry missing": manifest.as_uri(),
            "http:// registry refused": f"http://127.0.0.1:{_closed_port()}/m.json",
            "mlflow+http:// registry refused": f"mlflow+http://127.0.0.1:{_closed_port()}",
        }
        baseline: list[float] = []
        times: dict[str, list[float]] = {label: [] for label in cases}
        for i in range(args.runs):
            baseline.append(_once([sys.executable, "-c", "pass"]))
            for n, (label, registry) in enumerate(cases.items()):
                times[label].append(_once(_init_cmd(base, registry, base / f"pod-{i}-{n}")))
        print(f"{'case':<34} {'median':>9} {'ratio median':>13} {'ratio range':>12}")
        print(f"{'python -c pass':<34} {statistics.median(baseline) * 1000:7.1f}ms")
        for label, got in times.items():
            ratios = [t / b for t, b in zip(got, baseline, strict=True)]
            print(
                f"{label:<34} {statistics.median(got) * 1000:7.1f}ms "
                f"{statistics.median(ratios):12.1f}x {min(ratios):5.1f}-{max(ratios):.1f}x"
            )
        print(f"goal: ≤ 6x python -c pass ({args.runs} interleaved rounds)")
        bare = _imports([sys.executable, "-c", "pass"])
        for label, registry in cases.items():
            extra = {
                k: v
                for k, v in _imports(_init_cmd(base, registry, base / "pod-imports")).items()
                if k not in bare or v[0] > bare[k][0]
            }
            shutil.rmtree(base / "pod-imports", ignore_errors=True)
            third = sorted(k for k in extra if _third_party(k) and k != "pointercache")
            std = [k for k in extra if not _third_party(k)]
            ours = extra.get("pointercache", (0, 0))
            print(
                f"\n{label}: pointercache modules {ours[0]} ({ours[1] / 1000:.0f} ms self); "
                f"stdlib packages {len(std)} ({sum(extra[k][1] for k in std) / 1000:.0f} ms self); "
                f"third-party: {', '.join(third) or 'none'}"
            )
            heavy = sorted(std, key=lambda k: -extra[k][1])[:8]
            print(
                "  heaviest stdlib: " + ", ".join(f"{k} {extra[k][1] / 1000:.0f}ms" for k in heavy)
            )
        print(f"\npython {sys.version.split()[0]}, {sysconfig.get_platform()}")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
