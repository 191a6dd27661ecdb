"""Propagation and registry-load benchmark: how fast a fleet follows a change, and what it costs.

1. Propagation: N sidecar processes (50 by default), each with its own shared volume, follow one
   registry. The benchmark changes the production alias to a new version (a fresh ``file://``
   artifact each time) and times the change → flipped ``current`` link of every sidecar, read with
   ``os.readlink`` every 2 ms. Two registries: a ConfigMap watch (``configmap://``, served by kmock
   on loopback, polling disabled) and an HTTP manifest polled every second (default jitter 0.2).
   Goals: p99 ≤ 1 s event-driven; p99 ≤ poll period + 1 s polling. All N processes share this
   machine's CPUs, so after a change they queue for CPU: the first sidecar to flip shows the
   latency of one pod, the last one the fan-out on a crowded node (pods on a cluster have their
   own CPU, so the real spread is smaller).
2. Registry load: 1,000 ``HttpManifestSource`` pollers (in two processes) poll the HTTP manifest
   every 5 s (+ up to 20 % jitter, as the sidecar does). The manifest server counts what reaches
   it: requests per second and the share answered ``304 Not Modified``, in steady state and in
   the period after one change.

Run: ``.venv/bin/python -m bench.propagation [--sidecars 50] [--changes 12] [--pollers 1000]``
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import hashlib
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kmock
from aiohttp import web

from bench import PYTHON, REPO, print_table
from pointercache.errors import SourceError
from pointercache.model.candidate import Selector
from pointercache.model.digest import tree_digest
from pointercache.resolve.sources import SourceOptions
from pointercache.resolve.sources.http import HttpManifestSource
from tests.kube_api import ConfigMapApi

MODEL = "recommender"
ANCHORS = [
    ("common cache TTL (low end)", 30.0),
    ("common cache TTL (high end)", 60.0),
    ("300 s TTL incident: bad model kept", 240.0),
    ("kubelet ConfigMap volume update (low)", 60.0),
    ("kubelet ConfigMap volume update (high)", 120.0),
]
_LIBC = ctypes.CDLL(None, use_errno=True)


def _die_with_parent() -> None:  # runs in the child between fork and exec
    _LIBC.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: no orphans even if the bench is killed


class Registry:
    """The HTTP manifest server's state: body, ETag, and a log of (time, status) per request."""

    def __init__(self) -> None:
        self.body, self.etag = b"{}", '""'
        self.log: list[tuple[float, int]] = []

    def publish(self, doc: dict[str, Any]) -> None:
        """Serve ``doc`` from now on (a new ETag)."""
        self.body = json.dumps(doc).encode()
        self.etag = '"' + hashlib.sha256(self.body).hexdigest()[:16] + '"'

    async def handle(self, request: web.Request) -> web.Response:
        """GET with If-None-Match support."""
        if request.headers.get("If-None-Match") == self.etag:
            self.log.append((time.time(), 304))
            return web.Response(status=304, headers={"ETag": self.etag})
        self.log.append((time.time(), 200))
        headers = {"ETag": self.etag, "Content-Type": "application/json"}
        return web.Response(body=self.body, headers=headers)

    def window(self, start: float, end: float) -> tuple[int, int]:
        """(requests, 304s) logged in [start, end)."""
        hits = [s for t, s in self.log if start <= t < end]
        return len(hits), hits.count(304)


def make_versions(base: Path, count: int) -> dict[str, Any]:
    """``count`` small directory artifacts and their manifest entries (digest and size)."""
    versions = {}
    for v in range(1, count + 1):
        d = base / "artifacts" / f"v{v}"
        d.mkdir(parents=True)
        (d / "weights.bin").write_bytes(os.urandom(4096))
        (d / "meta.json").write_text(json.dumps({"version": str(v)}))
        digest, size = tree_digest(d)
        versions[str(v)] = {"uri": d.as_uri(), "digest": digest, "size_bytes": size}
    return versions


def manifest(versions: dict[str, Any], production: int) -> dict[str, Any]:
    """The manifest whose production alias (and revision) is ``production``."""
    return {
        "schema": 1,
        "model": MODEL,
        "revision": production,
        "aliases": {"production": str(production)},
        "versions": versions,
    }


def served(root: Path) -> str | None:
    """The version ``root/current`` points at (``versions/MODEL/<version>-<digest12>``)."""
    try:
        return Path(os.readlink(root / "current")).name.rsplit("-", 1)[0]
    except OSError:
        return None


def watch_flips(roots: list[Path], version: str, deadline: float) -> list[float | None]:
    """Read every root's link every 2 ms until all serve ``version``; monotonic flip times."""
    seen: list[float | None] = [None] * len(roots)
    while time.monotonic() < deadline and None in seen:
        for i, root in enumerate(roots):
            if seen[i] is None and served(root) == version:
                seen[i] = time.monotonic()
        time.sleep(0.002)
    return seen


class Fleet:
    """N sidecar processes, each with its own root and LKG directory, logs to files."""

    def __init__(self, work: Path, env: dict[str, str]) -> None:
        self.work, self.env = work, env
        self.procs: list[subprocess.Popen[bytes]] = []
        self.roots: list[Path] = []

    def spawn(self, registry: str, poll_interval: float) -> None:
        """Start one sidecar (from the event-loop thread, which lives as long as the bench)."""
        d = self.work / f"sidecar-{len(self.procs)}"
        d.mkdir()
        args = (
            f"-m pointercache_cli sidecar --model {MODEL} --registry {registry} --root "
            f"{d}/root --lkg-dir {d}/lkg --listen 127.0.0.1:0 --poll-interval {poll_interval} "
            "--log-level warning"
        ).split()  # the paths come from tempfile: no spaces
        with (d / "stderr.log").open("wb") as log:
            self.procs.append(spawn([PYTHON, *args], env=self.env, stderr=log))
        self.roots.append(d / "root")

    async def start(self, n: int, registry: str, poll_interval: float, batch: int) -> float:
        """Start ``n`` sidecars in batches; return the seconds until every root has ``current``."""
        t = time.monotonic()
        for first in range(0, n, batch):
            for _ in range(min(batch, n - first)):
                self.spawn(registry, poll_interval)
            await self.wait(lambda: all(served(r) == "1" for r in self.roots), 120)
        return time.monotonic() - t

    async def wait(self, done: Callable[[], bool], timeout: float) -> None:
        """Poll ``done`` every 100 ms; fail if a sidecar exits or time runs out."""
        deadline = time.monotonic() + timeout
        while not done():
            dead = [i for i, p in enumerate(self.procs) if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                log = self.work / f"sidecar-{(dead or [0])[0]}" / "stderr.log"
                sys.exit(f"sidecars not ready (dead: {dead}): {log.read_text()[-1500:]}")
            await asyncio.sleep(0.1)


def spawn(cmd: list[str], **kw: Any) -> subprocess.Popen[bytes]:
    """Start ``cmd`` from the repository root; it gets SIGTERM if the bench process dies.

    Called from the event-loop thread only (the thread lives as long as the bench); the
    pre-exec function calls ``prctl`` and nothing else, so no lock is taken after the fork.
    """
    kw.setdefault("stdout", subprocess.DEVNULL)
    return subprocess.Popen(cmd, cwd=REPO, preexec_fn=_die_with_parent, **kw)  # noqa: PLW1509


def stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    """Terminate and reap ``procs`` (SIGKILL after a grace period)."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
    deadline = time.monotonic() + 15
    for p in procs:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def pct(values: list[float], q: int) -> float:
    """The q-th percentile (inclusive method: never beyond the largest sample)."""
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


async def propagation(
    fleet: Fleet,
    publish: Callable[[int], None],
    args: argparse.Namespace,
    registry: str,
    poll_interval: float,
) -> dict[str, Any]:
    """Start the fleet, make ``args.changes`` changes, return the delays and context."""
    load_before = os.getloadavg()[0]
    startup = await fleet.start(args.sidecars, registry, poll_interval, args.batch)
    delays: list[float] = []
    ends: list[tuple[float, float]] = []  # per change: (first flip, last flip)
    missed = 0
    for change in range(2, args.changes + 2):
        await asyncio.sleep(random.uniform(0.3, 1.0))  # random phase against the poll timers
        deadline = time.monotonic() + 20
        watcher = asyncio.to_thread(watch_flips, fleet.roots, str(change), deadline)
        flips = asyncio.create_task(watcher)
        await asyncio.sleep(0.01)  # the watcher thread is running before the change
        t0 = time.monotonic()
        publish(change)
        seen = await flips
        flipped = [t - t0 for t in seen if t is not None]
        delays += flipped
        ends += [(min(flipped), max(flipped))] if flipped else []
        missed += seen.count(None)
    stop_all(fleet.procs)
    load = (load_before, os.getloadavg()[0])
    return {"delays": delays, "ends": ends, "missed": missed, "startup": startup, "load": load}


async def configmap_mode(
    work: Path, versions: dict[str, Any], args: argparse.Namespace
) -> dict[str, Any]:
    """Propagation through a ConfigMap watch (kmock on loopback, the real Kubernetes client)."""
    async with kmock.KubernetesEmulator() as handler, kmock.Server(handler) as server:
        url = str(server.url).rstrip("/")
        kubeconfig = work / "kubeconfig"
        ctx = {"cluster": "b", "user": "b"}
        config = {
            "current-context": "b",
            "clusters": [{"name": "b", "cluster": {"server": url}}],
            "users": [{"name": "b", "user": {}}],
            "contexts": [{"name": "b", "context": ctx}],
        }
        kubeconfig.write_text(json.dumps(config))
        api = ConfigMapApi(handler, url)

        def publish(v: int) -> None:
            api.put("ml", "registry", {f"{MODEL}.json": json.dumps(manifest(versions, v))})

        publish(1)
        fleet = Fleet(work / "configmap", base_env() | {"KUBECONFIG": str(kubeconfig)})
        fleet.work.mkdir()
        try:
            return await propagation(fleet, publish, args, "configmap://ml/registry", 3600)
        finally:
            stop_all(fleet.procs)
            api.disconnect_watches()
            await asyncio.sleep(0)


async def http_mode(
    work: Path, versions: dict[str, Any], registry: Registry, url: str, args: argparse.Namespace
) -> dict[str, Any]:
    """Propagation through 1 s polling of the HTTP manifest."""
    registry.publish(manifest(versions, 1))
    fleet = Fleet(work / "http", base_env())
    fleet.work.mkdir()
    try:
        return await propagation(
            fleet, lambda v: registry.publish(manifest(versions, v)), args, url, 1.0
        )
    finally:
        stop_all(fleet.procs)


async def registry_load(
    registry: Registry, url: str, versions: dict[str, Any], args: argparse.Namespace
) -> list[list[str]]:
    """Pollers in child processes; count requests and 304s per window at the server."""
    registry.publish(manifest(versions, 1))
    procs, period, per = [], args.period, args.pollers // args.poller_procs
    t0 = time.time() + 3  # time for the children to start
    steady = (t0 + period * 1.3, t0 + period * 1.3 + args.steady_seconds)
    change_at, stop_at = steady[1], steady[1] + period * 1.3
    for _ in range(args.poller_procs):
        cmd = [PYTHON, "-m", "bench.propagation", "--poller-child", url]
        cmd += [str(x) for x in (per, period, t0, stop_at)]
        procs.append(spawn(cmd, stdout=subprocess.PIPE))
    try:
        await asyncio.sleep(change_at - time.time())
        registry.publish(manifest(versions, 2))
        outs = []
        for p in procs:
            out, _ = await asyncio.to_thread(p.communicate, None, stop_at - time.time() + 30)
            outs.append(json.loads(out))
    finally:
        stop_all(procs)
    errors = sum(o["errors"] for o in outs)
    expected = per * args.poller_procs / (period * 1.1)
    rows = []
    windows = {"steady, no change": steady, "one period after a change": (change_at, stop_at)}
    for name, (a, b) in windows.items():
        n, n304 = registry.window(a, b)
        cells = [f"{b - a:.1f}", n, f"{n / (b - a):.0f}", f"{expected:.0f}"]
        rows.append([name, *map(str, cells), f"{n304 / max(n, 1):.1%}", str(n - n304)])
    rows.append(["client errors (timeouts etc.), whole run", "", str(errors), "", "", "", ""])
    return rows


def poller_child(url: str, count: int, period: float, start_at: float, stop_at: float) -> None:
    """Child: ``count`` HttpManifestSource pollers from ``start_at`` until ``stop_at``."""
    errors = [0]

    async def poll(source: HttpManifestSource) -> None:
        await asyncio.sleep(start_at - time.time() + random.uniform(0, period))
        while time.time() < stop_at:
            try:
                await source.resolve(MODEL, Selector.parse("alias:production"))
            except SourceError:
                errors[0] += 1
            await asyncio.sleep(period * (1 + random.uniform(0, 0.2)))

    async def run() -> None:
        sources = [HttpManifestSource(url, SourceOptions()) for _ in range(count)]
        try:
            await asyncio.gather(*(poll(s) for s in sources))
        finally:
            await asyncio.gather(*(s.aclose() for s in sources))

    asyncio.run(run())
    print(json.dumps({"errors": errors[0]}))


def base_env() -> dict[str, str]:
    """The bench's environment without POINTERCACHE_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("POINTERCACHE_")}
    return env | {"PYTHONUNBUFFERED": "1"}


def report(results: dict[str, dict[str, Any]], goals: dict[str, float], n: int) -> None:
    """Print the propagation table and the anchors."""
    rows, p99s = [], {}
    for mode, r in results.items():
        d = sorted(r["delays"])
        p99s[mode] = pct(d, 99)
        p50, p99 = pct(d, 50), p99s[mode]
        cells = [n, len(d), r["missed"], f"{r['startup']:.0f}", f"{p50:.3f}", f"{p99:.3f}"]
        first, last = (statistics.median(e) for e in zip(*r["ends"], strict=True))
        cells += [f"{d[-1]:.3f}", f"{first:.3f}", f"{last:.3f}", f"{goals[mode]:.1f}"]
        cells += [f"{p99 / goals[mode]:.2f}"]
        rows.append([mode, *map(str, cells), "{:.1f} / {:.1f}".format(*r["load"])])
    headers = "registry|sidecars|samples|missed|startup s|p50 s|p99 s|max s|first p50|all p50"
    headers += "|goal p99 s|p99/goal"
    title = "Propagation: registry change -> flipped `current`, every sidecar"
    print_table(title, [*headers.split("|"), "load 1m before/after"], rows)
    print("first/all p50: median over changes of the first and of the last sidecar to flip")
    print_table(
        "Anchors (how long a stale pointer lives elsewhere) / our p99",
        ["anchor", "seconds", *(f"/ p99 {m}" for m in p99s)],
        [[a, f"{s:.0f}", *(f"{s / p:.0f}x" for p in p99s.values())] for a, s in ANCHORS],
    )


async def run(args: argparse.Namespace) -> None:
    """Both propagation modes, then the registry load; print the tables."""
    print(f"load average at start: {os.getloadavg()[0]:.1f} (1m) on {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory(prefix="propagation-") as tmp:
        work = Path(tmp)
        versions = make_versions(work, args.changes + 1)
        registry = Registry()
        app = web.Application()
        app.router.add_get(f"/{MODEL}.json", registry.handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/{MODEL}.json"
        try:
            results = {
                "configmap watch": await configmap_mode(work, versions, args),
                "http poll 1 s": await http_mode(work, versions, registry, url, args),
            }
            report(results, {"configmap watch": 1.0, "http poll 1 s": 2.0}, args.sidecars)
            load_before = os.getloadavg()[0]
            rows = await registry_load(registry, url, versions, args)
            print_table(
                f"Registry load: {args.pollers} pollers, {args.period:.0f} s period (+0-20 % "
                f"jitter), conditional GET; load 1m {load_before:.1f} -> {os.getloadavg()[0]:.1f}",
                ["window", "seconds", "requests", "req/s", "expected req/s", "304 share", "200s"],
                rows,
            )
        finally:
            await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    """Parse options and run (or run as a poller child)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sidecars", type=int, default=50)
    parser.add_argument("--changes", type=int, default=12)
    parser.add_argument("--batch", type=int, default=10, help="sidecars started at a time")
    parser.add_argument("--pollers", type=int, default=1000)
    parser.add_argument("--poller-procs", type=int, default=2)
    parser.add_argument("--period", type=float, default=5.0, help="poll period of the load test")
    parser.add_argument("--steady-seconds", type=float, default=10.0)
    parser.add_argument("--poller-child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.poller_child:
        u, c, p, a, b = args.poller_child
        poller_child(u, int(c), float(p), float(a), float(b))
        return
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
