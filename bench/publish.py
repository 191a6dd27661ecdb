"""Write-path benchmark: publish latency (registry up / down) and drain throughput after an outage.

Against a real ``mlflow server`` (sqlite backend, one worker) on loopback, started here:

- **publish, registry up**: ``--runs`` registrations, each one ``publish`` call (in-process: the
  outbox write, then the MLflow calls), p50/p99 of the wall time, state ``registered``;
- **publish, registry down**: the same against a closed port (connection refused), state
  ``queued``: what a training pipeline pays during an outage;
- **drain**: ``--queued`` registrations (1,000 by default) queued during the outage, then one
  ``Drainer.drain`` against the live server: registrations per second.

The CLI's interpreter start-up (about 0.3-0.5 s) is not included; the table says so.

Run: ``.venv/bin/python -m bench.publish [--runs 200] [--queued 1000]``
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench import print_table
from pointercache.base.log import log
from pointercache.publish.drain import Drainer, backoff, publish
from pointercache.publish.outbox import Outbox, State
from pointercache.publish.registration import Registration
from pointercache.resolve.sources import SourceOptions
from tests.helpers import free_port
from tests.mlflow_server import MlflowServer


def registration(model: str, n: int) -> Registration:
    """Registration ``n`` of ``model``: digest, size and the production alias."""
    return Registration.build(
        model=model,
        version=str(n),
        uri=f"s3://models/{model}/{n}/",
        digest="sha256:" + f"{n:064x}",
        size_bytes=1_500_000_000,
        alias="production",
    )


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def publish_latencies(registry: str, outbox: Path, model: str, runs: int) -> list[float]:
    """Wall seconds of ``runs`` publishes; every one must end registered or queued."""
    seconds = []
    with Outbox(outbox) as box:
        drainer = Drainer(box, SourceOptions(timeout=5.0))
        try:
            for n in range(runs):
                start = time.perf_counter()
                entry = await publish(drainer, registry, registration(model, n))
                seconds.append(time.perf_counter() - start)
                if entry.state is State.REJECTED:
                    sys.exit(f"publish {n} was rejected: {entry.last_error}")
        finally:
            await drainer.aclose()
    return seconds


async def drain_rate(registry: str, outbox: Path, model: str, queued: int) -> tuple[float, int]:
    """Queue ``queued`` registrations, drain them against the live server: (seconds, done)."""
    with Outbox(outbox) as box:
        for n in range(queued):
            box.enqueue(registry, registration(model, n))
        drainer = Drainer(box, SourceOptions(timeout=10.0))
        start = time.perf_counter()
        try:
            report = await drainer.drain(backoff(0.1, 1.0), give_up_after=3600)
        finally:
            await drainer.aclose()
        return time.perf_counter() - start, len(report.registered)


def main() -> None:
    """Start MLflow, measure, print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--queued", type=int, default=1000)
    args = parser.parse_args()
    log.configure(level="error")  # one line per registration would drown the table
    with tempfile.TemporaryDirectory(prefix="pc-bench-publish-") as tmp:
        work = Path(tmp)
        server = MlflowServer(work)
        server.start()
        try:
            up = asyncio.run(
                publish_latencies(server.registry_uri, work / "up", "bench-up", args.runs)
            )
            down_uri = f"mlflow+http://127.0.0.1:{free_port()}"
            down = asyncio.run(publish_latencies(down_uri, work / "down", "bench-down", args.runs))
            seconds, done = asyncio.run(
                drain_rate(server.registry_uri, work / "drain", "bench-drain", args.queued)
            )
        finally:
            server.stop()
    rows = [
        [f"publish, registry up ({args.runs})", "registered",
         f"{statistics.median(up) * 1000:.1f}", f"{percentile(up, 0.99) * 1000:.1f}"],
        [f"publish, registry down ({args.runs})", "queued",
         f"{statistics.median(down) * 1000:.1f}", f"{percentile(down, 0.99) * 1000:.1f}"],
    ]  # fmt: skip
    print_table("publish latency, in-process (no interpreter start-up)",
                ["case", "state", "p50 ms", "p99 ms"], rows)  # fmt: skip
    print_table(
        "drain after an outage (real MLflow server, sqlite backend, 1 worker)",
        ["queued", "registered", "seconds", "registrations/s"],
        [[str(args.queued), str(done), f"{seconds:.1f}", f"{done / seconds:.1f}"]],
    )


if __name__ == "__main__":
    main()
