"""Benchmarks of the bounds against stalls: how long a stalled store costs, and what it holds up.

1. ``pointercache init --deadline D`` when the registry names an artifact that trickles (headers
   announcing 10 MiB, 1 KiB, then a byte every 2 s), with a node LKG and a pinned version on hand:
   wall time to a published LKG, as a fraction of the deadline. Then with nothing to fall back
   to: wall time to the exit with the one-line reason (the promise: ≤ deadline + 1 s, plus the
   interpreter's start-up).
2. The sidecar serving v1 while v2 trickles: latency of ``POST /refresh`` and ``GET /healthz``
   during the download (median, max), and the time from the registry naming a good v3 to v3
   being served (pre-emption).
3. A version whose digest never matches, polled every 0.5 s for 10 s: downloads made (the hold-off
   should leave one; before it, one per poll).

Run: ``.venv/bin/python -m bench.stalls [--deadlines 10 30] [--samples 20]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pointercache.model.digest import tree_digest
from pointercache.volume.fsutil import atomic_write_bytes

MODEL = "recommender"
ANNOUNCED = 10 << 20


@contextmanager
def trickle_server(every: float = 2.0) -> Iterator[str]:
    """An HTTP server on loopback whose ``/m.bin`` trickles; yields its base URL."""
    from aiohttp import web

    async def trickle(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Length": str(ANNOUNCED), "ETag": '"t"'})
        await resp.prepare(request)
        try:
            await resp.write(b"x" * 1024)
            while True:
                await asyncio.sleep(every)
                await resp.write(b"x")
        except ConnectionResetError:
            return resp

    loop = asyncio.new_event_loop()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    ready = threading.Event()

    async def serve() -> web.AppRunner:
        app = web.Application()
        app.router.add_get("/m.bin", trickle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
        await runner.setup()
        await web.SockSite(runner, sock).start()
        return runner

    def run() -> None:
        asyncio.set_event_loop(loop)
        runner = loop.run_until_complete(serve())
        ready.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    ready.wait(10)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def cli(*args: str) -> list[str]:
    """The ``pointercache`` command from this interpreter."""
    return [sys.executable, "-m", "pointercache_cli", *args]


def artifact(base: Path, version: str) -> Path:
    """A small directory artifact."""
    path = base / "artifacts" / version
    path.mkdir(parents=True, exist_ok=True)
    (path / "weights.bin").write_bytes(version.encode() * 4096)
    return path


def entry(path: Path) -> dict[str, Any]:
    """A manifest entry for a local artifact."""
    digest, size = tree_digest(path)
    return {"uri": path.as_uri(), "digest": digest, "size_bytes": size}


def publish(manifest: Path, revision: int, production: str, versions: dict[str, Any]) -> None:
    """Write the registry's manifest."""
    doc = {
        "schema": 1,
        "model": MODEL,
        "revision": revision,
        "aliases": {"production": production},
        "versions": versions,
    }
    atomic_write_bytes(manifest, json.dumps(doc).encode())


def init(base: Path, pod: str, *extra: str) -> tuple[int, float, dict[str, Any] | None]:
    """Run init; (exit code, seconds, the published pointer or None)."""
    args = [
        "init",
        "--model",
        MODEL,
        "--registry",
        (base / "registry.json").as_uri(),
        "--root",
        str(base / pod),
        "--lkg-dir",
        str(base / "node"),
        "--termination-log",
        str(base / f"{pod}.term"),
        *extra,
    ]
    started = time.perf_counter()
    proc = subprocess.run(cli(*args), capture_output=True, text=True, check=False)
    took = time.perf_counter() - started
    pointer = base / pod / "pointer.json"
    return proc.returncode, took, json.loads(pointer.read_text()) if pointer.exists() else None


def bench_init(deadlines: list[float]) -> None:
    """Part 1."""
    print("init --deadline D, the registry's artifact trickling (a byte every 2 s)")
    print(f"{'deadline':>8}  {'fallbacks':>14}  {'exit':>4}  {'source':>9}  {'seconds':>7}  ratio")
    with trickle_server() as url:
        for deadline in deadlines:
            base = Path(tempfile.mkdtemp(prefix="pc-bench-stalls-"))
            try:
                v1 = artifact(base, "1")
                publish(base / "registry.json", 1, "1", {"1": entry(v1)})
                init(base, "seed")
                publish(
                    base / "registry.json", 2, "2", {"1": entry(v1), "2": {"uri": url + "/m.bin"}}
                )
                allow = ["--allow", url + "/", "--allow", base.as_uri()]
                pinned = ["--pinned-version", "1", "--pinned-uri", v1.as_uri()]
                for label, extra, pod in (
                    ("lkg + pinned", [*allow, *pinned], "with"),
                    ("none", ["--allow", url + "/"], "without"),
                ):
                    node = [] if label != "none" else ["--lkg-dir", str(base / "empty-node")]
                    code, took, pointer = init(
                        base, pod, "--deadline", str(deadline), *extra, *node
                    )
                    source = pointer["source"] if pointer else "-"
                    row = f"{deadline:>8g}  {label:>14}  {code:>4}  {source:>9}  {took:>7.2f}"
                    print(f"{row}  {took / deadline:.2f}")
            finally:
                shutil.rmtree(base, ignore_errors=True)


def get(url: str, method: str = "GET", timeout: float = 30) -> tuple[int, float]:
    """(status, seconds) of one request."""
    started = time.perf_counter()
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            resp.read()
            code = resp.status
    except urllib.error.HTTPError as exc:
        with exc:
            code = exc.code
    return code, time.perf_counter() - started


class Sidecar:
    """A sidecar process and its stderr lines."""

    def __init__(self, base: Path, *extra: str) -> None:
        args = [
            "sidecar",
            "--model",
            MODEL,
            "--registry",
            (base / "registry.json").as_uri(),
            "--root",
            str(base / "pod"),
            "--lkg-dir",
            str(base / "node"),
            "--listen",
            "127.0.0.1:0",
            *extra,
        ]
        self.proc = subprocess.Popen(cli(*args), stderr=subprocess.PIPE, text=True)
        self.lines: list[dict[str, Any]] = []
        self.port: int | None = None
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.monotonic() + 60
        while self.port is None and time.monotonic() < deadline:
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{self.port}"

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            self.lines.append(event)
            if event.get("event") == "listening":
                self.port = event["port"]

    def status(self) -> dict[str, Any]:
        """The /status document."""
        with urllib.request.urlopen(self.url + "/status", timeout=30) as resp:
            doc: dict[str, Any] = json.loads(resp.read())
            return doc

    def stop(self) -> None:
        """SIGTERM and wait."""
        self.proc.terminate()
        self.proc.wait(30)


def bench_sidecar(samples: int) -> None:
    """Part 2."""
    base = Path(tempfile.mkdtemp(prefix="pc-bench-stalls-"))
    with trickle_server() as url:
        try:
            v1, v3 = artifact(base, "1"), artifact(base, "3")
            publish(base / "registry.json", 1, "1", {"1": entry(v1)})
            init(base, "pod")
            side = Sidecar(
                base, "--poll-interval", "1", "--allow", url + "/", "--allow", base.as_uri()
            )
            try:
                trickle = {"uri": url + "/m.bin"}
                publish(base / "registry.json", 2, "2", {"1": entry(v1), "2": trickle})
                while not side.status()["in_flight"]:
                    time.sleep(0.1)
                refresh = [get(side.url + "/refresh", "POST")[1] for _ in range(samples // 4)]
                health = [get(side.url + "/healthz")[1] for _ in range(samples)]
                publish(
                    base / "registry.json", 3, "3", {"1": entry(v1), "2": trickle, "3": entry(v3)}
                )
                started = time.perf_counter()
                while (side.status()["current"] or {}).get("version") != "3":
                    time.sleep(0.02)
                preempt = time.perf_counter() - started
            finally:
                side.stop()
        finally:
            shutil.rmtree(base, ignore_errors=True)
    print("\nsidecar serving v1 while v2 trickles")
    print(
        f"POST /refresh: median {statistics.median(refresh) * 1000:.0f} ms, "
        f"max {max(refresh) * 1000:.0f} ms ({len(refresh)} calls, each answered 202)"
    )
    print(
        f"GET /healthz:  median {statistics.median(health) * 1000:.1f} ms, "
        f"max {max(health) * 1000:.1f} ms ({len(health)} calls)"
    )
    print(f"registry names v3 -> v3 served (pre-empting v2): {preempt:.2f} s")


def bench_backoff() -> None:
    """Part 3."""
    base = Path(tempfile.mkdtemp(prefix="pc-bench-stalls-"))
    try:
        v1, v2 = artifact(base, "1"), artifact(base, "2")
        publish(base / "registry.json", 1, "1", {"1": entry(v1)})
        init(base, "pod")
        side = Sidecar(base, "--poll-interval", "0.5")
        try:
            bad = {**entry(v2), "digest": "sha256:" + "0" * 64}
            publish(base / "registry.json", 2, "2", {"1": entry(v1), "2": bad})
            time.sleep(10)
            downloads = sum(1 for e in side.lines if e.get("event") == "flip-failed")
            polls = sum(1 for _ in range(int(10 / 0.5)))
        finally:
            side.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(
        f"\na digest that never matches, 10 s of polls every 0.5 s (~{polls} polls): "
        f"{downloads} download(s)"
    )


def main() -> None:
    """Run the three parts."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--deadlines", type=float, nargs="+", default=[10.0, 30.0])
    parser.add_argument("--samples", type=int, default=20)
    args = parser.parse_args()
    bench_init(args.deadlines)
    bench_sidecar(args.samples)
    bench_backoff()


if __name__ == "__main__":
    main()
