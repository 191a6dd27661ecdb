"""Benchmarks of the start-up path and of the file watch.

1. ``pointercache init`` wall time with the registry unreachable and the artifact in the node
   cache, as a ratio to ``python -c pass`` (goal ≤ 10x: heavy modules are imported lazily).
2. Time from a manifest change to the flipped pointer through the sidecar's file watch, median
   and p99 over N changes (goal: p99 ≤ 200 ms for a small artifact).

Run: ``.venv/bin/python -m bench.init_latency [--runs 20] [--changes 60]``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from pointercache.volume.fsutil import atomic_write_bytes
from pointercache_cli.artifacts import local_manifest

MODEL = "recommender"


def _manifest(path: Path, base: Path, revision: int, production: str) -> None:
    artifacts = {a.name: a for a in sorted((base / "artifacts").iterdir())}
    doc = local_manifest(MODEL, revision, {"production": production}, artifacts)
    atomic_write_bytes(path, json.dumps(doc).encode())


def _artifacts(base: Path, n: int) -> None:
    for i in range(1, n + 1):
        d = base / "artifacts" / str(i)
        d.mkdir(parents=True)
        (d / "weights.bin").write_bytes(os.urandom(4096) + str(i).encode())


def _time(cmd: list[str], runs: int, env: dict[str, str] | None = None) -> list[float]:
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, env=env)
        out.append(time.perf_counter() - t)
    return out


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bench_init(runs: int) -> None:
    """Init with the registry unreachable, served from the node LKG and cache."""
    base = Path(tempfile.mkdtemp(prefix="pc-bench-"))
    try:
        _artifacts(base, 1)
        manifest = base / "registry.json"
        _manifest(manifest, base, 1, "1")
        lkg = base / "lkg"
        pc = [
            sys.executable,
            "-m",
            "pointercache_cli",
            "init",
            "--model",
            MODEL,
            "--lkg-dir",
            str(lkg),
            "--termination-log",
            str(base / "term"),
        ]
        subprocess.run(
            [*pc, "--registry", manifest.as_uri(), "--root", str(base / "warm")],
            check=True,
            capture_output=True,
        )
        shutil.rmtree(base / "artifacts")
        manifest.unlink()
        baseline = _time([sys.executable, "-c", "pass"], runs)
        rows = [("python -c pass", baseline)]
        for label, registry in (
            ("init, file:// registry missing", manifest.as_uri()),
            ("init, http:// registry refused", f"http://127.0.0.1:{_closed_port()}/m.json"),
            ("init, mlflow+http registry refused", f"mlflow+http://127.0.0.1:{_closed_port()}"),
        ):
            times = []
            for i in range(runs):
                root = base / f"pod-{label[:10].replace(' ', '')}-{i}"
                times += _time([*pc, "--registry", registry, "--root", str(root)], 1)
            rows.append((label, times))
        ref = statistics.median(baseline)
        print(f"{'case':<38} {'median':>9} {'p90':>9} {'ratio':>7}")
        for label, times in rows:
            med = statistics.median(times)
            p90 = sorted(times)[int(0.9 * (len(times) - 1))]
            print(f"{label:<38} {med * 1000:8.1f}ms {p90 * 1000:8.1f}ms {med / ref:6.1f}x")
        print("goal: init ≤ 10x python -c pass")
    finally:
        shutil.rmtree(base, ignore_errors=True)


def bench_watch(changes: int) -> None:
    """Manifest change → flipped pointer through the sidecar's file watch."""
    base = Path(tempfile.mkdtemp(prefix="pc-bench-"))
    try:
        _artifacts(base, 2)
        manifest = base / "registry" / "m.json"
        manifest.parent.mkdir()
        _manifest(manifest, base, 1, "1")
        root = base / "pod"
        port = _closed_port()
        cmd = [
            sys.executable,
            "-m",
            "pointercache_cli",
            "sidecar",
            "--model",
            MODEL,
            "--registry",
            manifest.as_uri(),
            "--root",
            str(root),
            "--lkg-dir",
            str(base / "lkg"),
            "--listen",
            f"127.0.0.1:{port}",
            "--poll-interval",
            "3600",
            "--log-level",
            "warning",
        ]
        proc = subprocess.Popen(cmd)
        try:
            _wait(lambda: _served(port) == "1", 30)
            lat = []
            for i in range(changes):
                want = "2" if i % 2 == 0 else "1"
                t = time.perf_counter()
                _manifest(manifest, base, i + 2, want)
                _wait(
                    lambda w=want: os.readlink(root / "current").split("/")[-1].startswith(w + "-"),
                    10,
                )
                lat.append(time.perf_counter() - t)
        finally:
            proc.terminate()
            proc.wait(10)
        lat.sort()
        p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))]
        print(
            f"manifest change → flipped pointer over {changes} changes: median "
            f"{statistics.median(lat) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, "
            f"max {lat[-1] * 1000:.1f} ms (goal p99 ≤ 200 ms)"
        )
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _served(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=1) as r:
            cur = json.loads(r.read())["current"]
            return cur["version"] if cur else None
    except OSError:
        return None


def _wait(pred, timeout: float) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if pred():
                return
        except OSError:
            pass
        time.sleep(0.002)
    raise SystemExit("benchmark: timed out")


def main(argv: list[str] | None = None) -> None:
    """Run both benchmarks."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--changes", type=int, default=60)
    args = parser.parse_args(argv)
    bench_init(args.runs)
    bench_watch(args.changes)


if __name__ == "__main__":
    main()
