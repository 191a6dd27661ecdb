"""Loaded, not just published: flip → loaded latency, and the fleet view over 50 pods.

1. Flip → loaded, for two model servers, each behind a real sidecar on a ``file://`` registry
   (a watched manifest, polling off), over ``--flips`` promotions (≥ 20):

   - the example model server (``examples/model_server``) with ``--ack-url``: it follows the
     volume with ``reader.watch``, loads the new version and acknowledges it (``POST /loaded``);
   - MLServer (``.tools/mlserver``, scikit-learn runtime) reloaded by the sidecar's
     ``--on-flip-url`` (its ``v2/repository/models/{name}/load`` endpoint).

   Two numbers per flip: the sidecar's own ``flip_to_loaded_seconds`` (``/status``: from the
   ``current`` rename to the load), and the end-to-end time from writing the manifest to
   ``/status`` showing the version loaded (a 5 ms poll of ``/status``).
2. ``pointercache fleet`` over 50 pods in kmock (on loopback, the real ``kubernetes`` client):
   each pod annotated by the real ``PodReporter`` as publishing v2, 49 of them with v2 loaded
   and one whose model container never reloaded (still v1). The CLI's wall time (a fresh
   process, as a user runs it) and the in-process ``collect`` + ``render_table``; and whether
   the one answer (one poll of the fleet) names the laggard.

Run: ``.venv/bin/python -m bench.loaded [--flips 20] [--pods 50] [--runs 5]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import kmock

from bench import PYTHON, REPO, print_table
from pointercache.cluster.pods import PodReporter
from pointercache.model.loaded import Loaded, Via
from pointercache.model.pointer import Pointer
from pointercache_cli.artifacts import write_manifest

MODEL = "recommender"
sys.path.insert(0, str(REPO))
from tests.mlserver import MLServer, train  # noqa: E402 - the repository root is on the path now


def quantiles(values: list[float]) -> tuple[float, float]:
    """p50 and p99 (nearest rank) of ``values``."""
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * len(ordered)) - 1)]
    return statistics.median(ordered), p99


def cli(*args: str) -> list[str]:
    """The pointercache command from this interpreter."""
    return [PYTHON, "-m", "pointercache_cli", *args]


def status(url: str) -> dict[str, Any]:
    """The sidecar's /status."""
    with urllib.request.urlopen(url + "/status", timeout=10) as resp:
        doc: dict[str, Any] = json.loads(resp.read())
    return doc


class Sidecar:
    """A sidecar process on a fixed loopback port, logs to a file."""

    def __init__(self, work: Path, args: list[str], env: dict[str, str]) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        with (work / "sidecar.log").open("wb") as log:
            self.proc = subprocess.Popen(
                cli("sidecar", "--listen", f"127.0.0.1:{port}", *args),
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait(lambda: _answers(self.url), 60)

    def stop(self) -> None:
        """SIGTERM and wait."""
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)


def _answers(url: str) -> bool:
    try:
        status(url)
    except OSError:
        return False
    return True


def free_port() -> int:
    """A loopback port that was free a moment ago."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait(predicate: Any, timeout: float, interval: float = 0.005) -> Any:
    """Poll until truthy; raise on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"not met within {timeout}s")


def loaded_version(url: str) -> str | None:
    """The version /status says is loaded, once its reload is done."""
    doc = status(url)
    reload = doc.get("reload") or {}
    if reload.get("state") != "loaded":
        return None
    return (doc.get("loaded") or {}).get("version")


def flips(work: Path, url: str, flips: int) -> list[tuple[float, float]]:
    """Promote versions 2..flips+1 in turn; (sidecar flip→loaded, manifest→loaded) per flip."""
    out = []
    for version in range(2, flips + 2):
        started = time.monotonic()
        write_manifest(
            work / "registry.json",
            work,
            model=MODEL,
            revision=version,
            aliases={"production": str(version)},
        )
        wait(lambda v=str(version): loaded_version(url) == v, 120)
        took = time.monotonic() - started
        out.append((float(status(url)["reload"]["flip_to_loaded_seconds"]), took))
    return out


def prepare(work: Path, count: int, artifact: Any) -> list[str]:
    """Artifacts v1..v<count>, the manifest naming v1, init run; the common flags."""
    for version in range(1, count + 1):
        artifact(work / "artifacts" / f"v{version}", version)
    write_manifest(
        work / "registry.json", work, model=MODEL, revision=1, aliases={"production": "1"}
    )
    common = ["--model", MODEL, "--registry", (work / "registry.json").as_uri()]
    common += ["--root", str(work / "volume")]
    subprocess.run(
        cli("init", *common, "--termination-log", str(work / "term")), check=True, timeout=120
    )
    return common


def example_server(work: Path, count: int, env: dict[str, str]) -> list[tuple[float, float]]:
    """The example server acknowledging each load through the reader library."""

    def artifact(path: Path, version: int) -> None:
        path.mkdir(parents=True)
        model = {"kind": "linear", "weights": {"a": float(version)}, "bias": 0.0}
        (path / "model.json").write_text(json.dumps(model))

    common = prepare(work, count + 1, artifact)
    sidecar = Sidecar(work, [*common, "--poll-interval", "3600", "--ready-when", "loaded"], env)
    with (work / "server.log").open("wb") as log:
        argv = [PYTHON, "-m", "model_server", f"--root={work / 'volume'}"]
        server = subprocess.Popen(
            [*argv, "--listen=127.0.0.1:0", f"--ack-url={sidecar.url}"],
            env=env | {"PYTHONPATH": str(REPO / "examples")},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait(lambda: (status(sidecar.url).get("loaded") or {}).get("version") == "1", 60)
        return flips(work, sidecar.url, count)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)
        sidecar.stop()


def mlserver(work: Path, count: int, env: dict[str, str]) -> list[tuple[float, float]]:
    """MLServer reloaded by --on-flip-url."""
    models = {slope: train(work / "trained" / str(slope), float(slope)) for slope in (1, 2)}

    def artifact(path: Path, version: int) -> None:
        path.mkdir(parents=True)
        shutil.copy(models[1 + version % 2] / "model.joblib", path / "model.joblib")
        (path / "version.txt").write_text(str(version))  # a distinct digest per version

    common = prepare(work, count + 1, artifact)
    server = MLServer.start(work, MODEL, work / "volume")
    hook = server.url + "/v2/repository/models/{model}/load"
    args = [*common, "--poll-interval", "3600", "--on-flip-url", hook, "--on-flip-timeout", "60"]
    sidecar = Sidecar(work, args, env)
    try:
        return flips(work, sidecar.url, count)
    finally:
        sidecar.stop()
        server.stop()


async def fleet(pods: int, runs: int, env: dict[str, str], work: Path) -> dict[str, Any]:
    """``pointercache fleet`` over ``pods`` pods in kmock, one of them never reloaded."""
    from pointercache.adapters.kube.client import KubeClient, KubeConfig
    from pointercache.fleet.view import collect, render_table

    v1, v2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64
    async with kmock.KubernetesEmulator() as api, kmock.Server(api) as server:
        url = str(server.url).rstrip("/")
        client = KubeClient(KubeConfig(host=url, request_timeout=10.0))
        for i in range(pods):
            name = f"rec-{i:02d}"
            api.objects["v1/pods", "ml", name] = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "namespace": "ml", "labels": {"app": "rec"}},
                "status": {"conditions": [{"type": "Ready", "status": "True"}]},
            }
            pointer = Pointer.from_json(
                json.dumps(
                    {
                        "model": MODEL,
                        "version": "2",
                        "uri": "s3://models/rec/2/",
                        "digest": v2,
                        "size_bytes": 1,
                        "revision": 2,
                        "signature": None,
                        "source": "registry",
                        "source_detail": "bench",
                        "resolved_at": "2026-01-01T00:00:00.000Z",
                        "registry_seen_at": "2026-01-01T00:00:00.000Z",
                        "schema": 1,
                    }
                )
            )
            stuck = i == pods // 2
            loaded = Loaded(
                "1" if stuck else "2", v1 if stuck else v2, Via.ACK, "2026-01-01T00:00:00Z"
            )
            await PodReporter("ml", name, client=client).annotate(pointer, ["1", "2"], loaded)
        kubeconfig = work / "kubeconfig"
        kubeconfig.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "current-context": "b",
                    "clusters": [{"name": "b", "cluster": {"server": url}}],
                    "users": [{"name": "b", "user": {}}],
                    "contexts": [{"name": "b", "context": {"cluster": "b", "user": "b"}}],
                }
            )
        )
        walls, inproc, named = [], [], []
        for _ in range(runs):
            started = time.monotonic()
            done = await asyncio.to_thread(
                subprocess.run,
                cli("fleet", "-n", "ml", "-l", "app=rec"),
                env=env | {"KUBECONFIG": str(kubeconfig)},
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            walls.append(time.monotonic() - started)
            named.append(f"not loaded: rec-{pods // 2:02d} (loaded 1, published 2)" in done.stdout)
            started = time.monotonic()
            rows = await asyncio.to_thread(collect, "ml", "app=rec", client=client)
            render_table(rows)
            inproc.append(time.monotonic() - started)
        return {"cli": walls, "inproc": inproc, "named": named, "skew": done.stdout.splitlines()}


def main() -> int:
    """Run both parts and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--flips", type=int, default=20)
    parser.add_argument("--pods", type=int, default=50)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--only", choices=("example", "mlserver", "fleet"), action="append")
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith("POINTERCACHE_")}
    env["PYTHONUNBUFFERED"] = "1"
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-loaded-") as tmp:
        for name, run in (("example server (ack)", example_server), ("MLServer (hook)", mlserver)):
            key = "example" if name.startswith("example") else "mlserver"
            if args.only and key not in args.only:
                continue
            work = Path(tmp) / key
            work.mkdir()
            results = run(work, args.flips, env)
            sidecar_p50, sidecar_p99 = quantiles([r[0] for r in results])
            e2e_p50, e2e_p99 = quantiles([r[1] for r in results])
            rows.append(
                [
                    name,
                    str(len(results)),
                    f"{sidecar_p50 * 1000:.0f} / {sidecar_p99 * 1000:.0f}",
                    f"{e2e_p50 * 1000:.0f} / {e2e_p99 * 1000:.0f}",
                ]
            )
        if rows:
            print_table(
                "Flip → loaded (ms, p50 / p99)",
                ["model server", "flips", "flip → loaded (sidecar)", "manifest → loaded"],
                rows,
            )
        if not args.only or "fleet" in args.only:
            work = Path(tmp) / "fleet"
            work.mkdir()
            found = asyncio.run(fleet(args.pods, args.runs, env, work))
            print_table(
                f"pointercache fleet over {args.pods} pods (kmock), {args.runs} runs",
                ["what", "median s", "max s", "laggard named"],
                [
                    [
                        "CLI process (start-up included)",
                        f"{statistics.median(found['cli']):.2f}",
                        f"{max(found['cli']):.2f}",
                        f"{sum(found['named'])}/{len(found['named'])} answers",
                    ],
                    [
                        "collect + render (in process)",
                        f"{statistics.median(found['inproc']):.3f}",
                        f"{max(found['inproc']):.3f}",
                        "",
                    ],
                ],
            )
            print("\n" + "\n".join(found["skew"][-2:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
