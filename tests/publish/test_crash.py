"""SIGKILL of ``publish`` and of ``outbox run`` at random points: nothing lost, nothing twice.

Both loops run real ``pointercache`` processes against the real MLflow server (where a second
registration *could* create a duplicate version: MLflow has no conditional create), kill them
with SIGKILL after a random delay, and check after every kill that the outbox file is sound
(SQLite ``PRAGMA integrity_check``). At the end the outbox is drained and every version must
exist exactly once, in publish order.
"""

from __future__ import annotations

import os
import random
import select
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from pointercache.publish.outbox import Outbox
from pointercache.publish.registration import Registration
from tests.helpers import cli
from tests.mlflow_server import MlflowServer
from tests.publish.conftest import listed, publish_args, run_cli
from tests.publish.test_mlflow import labelled

KILLS = 50
"""SIGKILLs per loop: enough to land in every phase of a run, a minute or two per loop."""
ENTRIES = 150
"""Queued registrations the killed drainers work through (a few per run)."""


def integrity(outbox: Path) -> str:
    """SQLite's integrity check of the outbox file, read by a separate connection."""
    path = outbox / "outbox.sqlite3"
    if not path.exists():
        return "ok"
    db = sqlite3.connect(path, timeout=30)
    try:
        return str(db.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        db.close()


def spawn(env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    """Start ``pointercache ARGS`` with its output discarded."""
    return subprocess.Popen(cli(*args), env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)


def kill_after(proc: subprocess.Popen[bytes], delay: float) -> bool:
    """SIGKILL ``proc`` after ``delay`` s unless it ended first; True if it was killed."""
    try:
        proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        return True
    finally:
        if proc.stdout is not None:
            proc.stdout.close()
    return False


def publish_seconds(server: MlflowServer, env: dict[str, str], outbox: Path) -> float:
    """How long one whole ``publish`` takes on this machine: the median of three, in seconds.

    The kill delays are drawn inside it, so that the kills land inside runs on a fast machine
    and a slow one alike (a fixed range let most runs finish before their kill on a fast one).
    """
    took = []
    for version in ("1", "2", "3"):
        args = publish_args(
            server.registry_uri, outbox, f"kill-cal-{outbox.parent.name[-10:]}", version
        )
        began = time.monotonic()
        answer = run_cli(env, *args)
        took.append(time.monotonic() - began)
        assert answer.returncode == 0, answer.stderr
    return sorted(took)[1]


def once_each(server: MlflowServer, model: str, versions: list[str]) -> list[int]:
    """Each version exists exactly once; their MLflow numbers, in the order given."""
    numbers = []
    for version in versions:
        found = labelled(server, model, version)
        assert len(found) == 1, f"version {version}: {len(found)} registrations"
        numbers.append(int(found[0]["version"]))
    return numbers


@pytest.mark.slow
def test_sigkill_of_publish_loses_nothing_and_registers_nothing_twice(
    mlflow: MlflowServer, cli_env: dict[str, str], tmp_path: Path
) -> None:
    """Killed publishes are re-run like a retried pipeline step: every version once, in order."""
    model = f"kill-pub-{tmp_path.name[-10:]}"
    outbox = tmp_path / "ob"
    rng = random.Random(13)
    versions = [str(n) for n in range(KILLS)]
    lasts = publish_seconds(mlflow, cli_env, tmp_path / "calibration")
    started = time.monotonic()
    killed = []
    for version in versions:
        args = publish_args(mlflow.registry_uri, outbox, model, version, "--alias", "production")
        if kill_after(spawn(cli_env, *args), rng.uniform(0.1, 0.95) * lasts):
            killed.append(args)
        assert integrity(outbox) == "ok"
    drained = run_cli(cli_env, "outbox", "drain", "--outbox", str(outbox), "--until-empty")
    assert drained.returncode == 0, drained.stderr
    for args in killed:  # the pipeline re-runs a killed step until it exits 0
        answer = run_cli(cli_env, *args)
        assert answer.returncode == 0, answer.stderr
    kills = len(killed)
    print(f"publish kill loop: {kills} kills in {time.monotonic() - started:.0f}s")
    once_each(mlflow, model, versions)
    entries = listed(cli_env, outbox)
    assert all(e["state"] == "registered" for e in entries)
    # Publish order is the order of the outbox (a publish killed before its entry was committed
    # promised nothing; its re-run is a later publish).
    in_seq = once_each(mlflow, model, [e["version"] for e in entries])
    assert in_seq == sorted(in_seq)
    assert kills >= KILLS // 3


@pytest.mark.slow
def test_sigkill_of_outbox_run_loses_nothing_and_registers_nothing_twice(
    mlflow: MlflowServer, cli_env: dict[str, str], tmp_path: Path
) -> None:
    """Entries queued during an outage survive drainers killed mid-flight; each applies once."""
    model = f"kill-run-{tmp_path.name[-10:]}"
    outbox = tmp_path / "ob"
    versions = [str(n) for n in range(ENTRIES)]
    with Outbox(outbox) as box:  # queued as publish does during an outage (faster in-process)
        for version in versions:
            box.enqueue(mlflow.registry_uri, registration(model, version))
    rng = random.Random(14)
    kills, progress = 0, []
    run = ["outbox", "run", "--outbox", str(outbox), "--backoff-initial", "0.05"]
    started = time.monotonic()
    while kills < KILLS:
        proc = subprocess.Popen(
            cli(*run), env=cli_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        kills += kill_in_drain(proc, rng.uniform(0.0, 0.4))
        assert integrity(outbox) == "ok"
        progress.append(registered(outbox))
        if progress[-1] == len(versions):
            break
    drained = run_cli(cli_env, "outbox", "drain", "--outbox", str(outbox), "--until-empty")
    assert drained.returncode == 0, drained.stderr
    seconds = time.monotonic() - started
    print(
        f"outbox run kill loop: {kills} kills in {seconds:.0f}s, registered after each: {progress}"
    )
    numbers = once_each(mlflow, model, versions)
    assert numbers == sorted(numbers)
    assert kills >= KILLS // 2
    rm = mlflow.call("GET", "registered-models/get", {"name": model})["registered_model"]
    assert rm["aliases"] == [{"alias": "production", "version": str(numbers[-1])}]


def registration(model: str, version: str) -> Registration:
    """A registration of ``model`` ``version`` that moves the production alias."""
    return Registration.build(
        model=model, version=version, uri=f"s3://models/{model}/{version}/", alias="production"
    )


def kill_in_drain(proc: subprocess.Popen[bytes], delay: float) -> bool:
    """SIGKILL ``proc`` ``delay`` s after its first log line (it is draining by then).

    True if it was killed; False if it ended by itself first.
    """
    assert proc.stderr is not None
    try:
        ready, _, _ = select.select([proc.stderr], [], [], 60.0)
        assert ready, "outbox run logged nothing in 60 s"
        proc.stderr.readline()
        return kill_after(proc, delay)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        proc.stderr.close()


def registered(outbox: Path) -> int:
    """How many entries of the outbox are registered (read directly: faster than the CLI)."""
    db = sqlite3.connect(outbox / "outbox.sqlite3", timeout=30)
    try:
        return int(
            db.execute("SELECT count(*) FROM entries WHERE state = 'registered'").fetchone()[0]
        )
    finally:
        db.close()
