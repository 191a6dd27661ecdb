"""A real sidecar over a file:// registry, scraped the way Prometheus scrapes it."""

from __future__ import annotations

import json
import signal
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from pointercache import reader
from tests.e2e.conftest import World
from tests.e2e.helpers import MODEL, Sidecar, make_artifact, run_init, wait_until, write_manifest

SLOW_POLL = ["--poll-interval", "3600"]
"""Only the file watch and POST /refresh refresh, so each step of a test is one refresh."""


@dataclass
class Monitored:
    """A world whose init container has published v1 and whose sidecar is running."""

    world: World
    sidecar: Sidecar

    def scrape(self) -> dict[str, Metric]:
        """``/metrics`` parsed with prometheus_client's own parser, by family name."""
        code, body = self.sidecar.get("/metrics")
        assert code == 200
        return {m.name: m for m in text_string_to_metric_families(body.decode())}

    def refresh(self) -> str:
        """``POST /refresh`` (loopback, no token): the refresh's outcome, however long it takes."""
        code, body = self.sidecar.get("/refresh?wait=30", method="POST", timeout=40)
        assert code == 200, body
        outcome: str = json.loads(body)["outcome"]
        return outcome

    def publish(self, revision: int, production: str, event: str) -> None:
        """Move the production alias and wait for the sidecar to log ``event`` about it."""
        count = self.count(event)
        self.world.publish(revision, production)
        wait_until(lambda: self.count(event) > count)

    def acknowledge(self) -> dict[str, object]:
        """``POST /loaded`` of the version published now, as a model container would."""
        model = reader.current(self.world.root)
        assert model is not None
        body = json.dumps({"version": model.pointer.version, "digest": model.pointer.digest})
        request = urllib.request.Request(
            self.sidecar.url + "/loaded", data=body.encode(), method="POST"
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
            answer: dict[str, object] = json.loads(resp.read())["loaded"]
        return answer

    def count(self, event: str) -> int:
        """How many times the sidecar has logged ``event``."""
        return sum(1 for e in self.sidecar.events() if e.get("event") == event)


def make_world(base: Path) -> World:
    """Artifacts v1, v2 and v3 and a manifest naming v1 at revision 1."""
    for version in ("1", "2", "3"):
        make_artifact(base, version)
    world = World(
        base,
        base / "registry" / f"{MODEL}.json",
        base / "pod",
        base / "node-lkg",
        base / "termination-log",
    )
    write_manifest(world.manifest, base, revision=1, aliases={"production": "1"})
    return world


@pytest.fixture
def monitored(tmp_path: Path, cli_env: dict[str, str]) -> Iterator[Monitored]:
    """Init has published v1; a sidecar with a one-hour poll serves it and its metrics."""
    world = make_world(tmp_path)
    assert run_init(cli_env, *world.init_args()).returncode == 0
    sidecar = Sidecar(cli_env, [*world.common(), *SLOW_POLL])
    try:
        wait_until(lambda: sidecar.get("/readyz")[0] == 200)
        yield Monitored(world, sidecar)
    finally:
        sidecar.stop(signal.SIGKILL)


def elapsed_since(start: float) -> float:
    """Seconds on the system-wide monotonic clock since ``start`` (shared with the sidecar)."""
    return time.monotonic() - start
