"""Idle resident memory of the sidecar, per registry kind.

For each kind a real ``pointercache sidecar`` is started against a registry of that kind (a
``file://`` manifest; an ``http://`` manifest served by ``python -m http.server``; an
``mlflow+http://`` registry that refuses connections, so the model comes from the node LKG;
an ``s3://`` manifest in moto's standalone server). Once ``/readyz`` answers 200 it is left to
poll every second for ``--settle`` seconds; then its ``VmRSS`` (and the peak, ``VmHWM``) is read
from ``/proc/<pid>/status``. Goals: ≤ 40 MiB for file/http/mlflow, ≤ 50 MiB for s3.

Byte code is precompiled, as in the image. The artifact is a small ``file://`` tree.

Run: ``.venv/bin/python -m bench.footprint [--settle 8] [--rounds 2]``
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench import REPO
from pointercache.volume.fsutil import atomic_write_bytes
from pointercache_cli.artifacts import local_manifest

MODEL = "recommender"
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _manifest_bytes(base: Path) -> bytes:
    art = base / "artifacts" / "1"
    art.mkdir(parents=True, exist_ok=True)
    (art / "weights.bin").write_bytes(os.urandom(4096))
    doc = local_manifest(MODEL, 1, {"production": "1"}, {"1": art})
    return json.dumps(doc).encode()


def _status(path: str, port: int) -> int | None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://127.0.0.1:{port}{path}", timeout=1) as answer:
            return int(answer.status)
    except OSError:
        return None


def _rss_kib(pid: int) -> tuple[int, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def _measure(base: Path, registry: str, env: dict[str, str], settle: float, tag: str) -> tuple:
    port = _port()
    cmd = [
        sys.executable,
        "-m",
        "pointercache_cli",
        "sidecar",
        "--model",
        MODEL,
        "--registry",
        registry,
        "--root",
        str(base / f"pod-{tag}"),
        "--lkg-dir",
        str(base / "lkg"),
        "--listen",
        f"127.0.0.1:{port}",
        "--poll-interval",
        "1",
        "--log-level",
        "warning",
    ]
    with (base / "sidecar.log").open("ab") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=log, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while _status("/readyz", port) != 200:
            if time.monotonic() > deadline or proc.poll() is not None:
                sys.exit(f"sidecar for {registry} not ready: see {base / 'sidecar.log'}")
            time.sleep(0.1)
        time.sleep(settle)
        return _rss_kib(proc.pid)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def main(argv: list[str] | None = None) -> None:
    """Measure every registry kind and print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--settle", type=float, default=8.0, help="seconds of polling first")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds per kind")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    from tests.servers import MotoServer

    for package in ("pointercache", "pointercache_cli"):
        compileall.compile_dir(REPO / package, quiet=1)
    base = Path(tempfile.mkdtemp(prefix="pc-bench-footprint-"))
    moto = MotoServer(log_path=base / "moto.log")
    web_dir = base / "web"
    web_dir.mkdir()
    web_port = _port()
    web = subprocess.Popen(
        [sys.executable, "-m", "http.server", "-b", "127.0.0.1", "-d", str(web_dir), str(web_port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        body = _manifest_bytes(base)
        atomic_write_bytes(base / "m.json", body)
        atomic_write_bytes(web_dir / "m.json", body)
        moto.start()
        client = moto.client()
        client.create_bucket(Bucket="bench")
        client.put_object(Bucket="bench", Key="m.json", Body=body)
        kinds = {
            "file://": ((base / "m.json").as_uri(), ENV),
            "http://": (f"http://127.0.0.1:{web_port}/m.json", ENV),
            "mlflow+http:// (refused)": (f"mlflow+http://127.0.0.1:{_port()}", ENV),
            "s3://": ("s3://bench/m.json", {**ENV, **moto.env()}),
        }
        found: dict[str, list[tuple[int, int]]] = {kind: [] for kind in kinds}
        for r in range(args.rounds):
            for n, (kind, (registry, env)) in enumerate(kinds.items()):
                found[kind].append(_measure(base, registry, env, args.settle, f"{r}-{n}"))
        print(f"{'registry':<26} {'idle RSS MiB':>13} {'peak MiB':>9} {'goal':>6}")
        for kind, values in found.items():
            rss = statistics.median(v[0] for v in values) / 1024
            peak = statistics.median(v[1] for v in values) / 1024
            goal = 50 if kind == "s3://" else 40
            print(f"{kind:<26} {rss:13.1f} {peak:9.1f} {goal:>6}")
        print(f"median of {args.rounds} rounds, {args.settle:.0f} s of 1 s polls after ready")
    finally:
        moto.stop()
        web.terminate()
        web.wait(timeout=10)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
