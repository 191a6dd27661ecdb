"""Crash safety of the real sidecar: SIGKILL at random moments while it stages and flips."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pointercache.model.digest import tree_digest
from pointercache.model.pointer import Pointer
from tests.e2e.conftest import World
from tests.e2e.helpers import Sidecar, make_artifact, run_init, wait_until
from tests.e2e.reader_check import check_once

KILLS = 20


def churn(world: World, stop: threading.Event, revision: list[int]) -> None:
    """Move the production alias between three versions, bumping the revision every ~80 ms."""
    while not stop.is_set():
        revision[0] += 1
        world.publish(revision[0], str(1 + revision[0] % 3))
        time.sleep(0.08)


@pytest.mark.slow
def test_sigkill_during_stage_and_flip_never_tears_the_volume(
    world: World,
    cli_env: dict[str, str],
    tmp_path: Path,
    record_property: pytest.RecordProperty,
) -> None:
    """Across many SIGKILLs mid-flip, a concurrent reader always finds a complete model."""
    for v in ("1", "2", "3"):
        make_artifact(world.base, v, parts=4, size=1 << 19)
    world.publish(1, "1")
    assert run_init(cli_env, *world.init_args()).returncode == 0
    report, stopfile = tmp_path / "reader.json", tmp_path / "stop"
    reader = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.e2e.reader_check",
            str(world.root),
            str(report),
            str(stopfile),
        ],
        env=cli_env,
    )
    stop, revision = threading.Event(), [1]
    writer = threading.Thread(target=churn, args=(world, stop, revision), daemon=True)
    writer.start()
    rng = random.Random(20261122)
    flips_seen: set[str] = set()
    try:
        for _ in range(KILLS):
            sidecar = Sidecar(
                cli_env, [*world.common(), "--poll-interval", "0.2", "--keep-versions", "2"]
            )
            # Let it flip at least once (the manifest churns every ~80 ms, so it is always
            # staging or flipping), then kill it at a random moment of the next cycles.
            wait_until(lambda s=sidecar: s.find("flipped") or s.find("rollback"), timeout=30)
            time.sleep(rng.uniform(0.0, 0.3))
            sidecar.stop(signal.SIGKILL)
            flips_seen |= {
                e.get("version", "")
                for e in sidecar.events()
                if e.get("event") in {"flipped", "rollback"}
            }
            _, problem = check_once(world.root, True)
            assert problem is None, problem
    finally:
        stop.set()
        writer.join(5)
        stopfile.touch()
        reader.wait(30)
    result = json.loads(report.read_text())
    record_property("sigkills", KILLS)
    record_property("reader_checks", result["checks"])
    print(
        f"\n{KILLS} SIGKILLs, {result['checks']} reader checks, "
        f"{len(result['violations'])} violations, versions flipped to: {sorted(flips_seen)}"
    )
    assert result["violations"] == []
    assert result["checks"] > KILLS
    assert len(flips_seen) >= 2, "the sidecar never got to flip between kills"
    final = Sidecar(cli_env, [*world.common(), "--poll-interval", "0.2"])
    try:
        expected = str(1 + revision[0] % 3)
        wait_until(lambda: final.status()["current"]["version"] == expected, timeout=30)
    finally:
        final.stop(signal.SIGTERM)
    pointer = Pointer.read(world.root / "pointer.json")
    assert tree_digest(world.root / "model")[0] == pointer.digest
    assert pointer.revision == revision[0]
