"""The init deadline's last resort: a watchdog thread that ends a process whatever it does."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

SCRIPT = """
import os, sys, time
from pathlib import Path
from pointercache.sync.watchdog import Watchdog

mode, note = sys.argv[1], Path(sys.argv[2])
dog = Watchdog(1.0, lambda: note.write_text("expired")).start()
if mode == "fifo":  # a blocking open that nothing will ever complete
    os.mkfifo(note.with_suffix(".fifo"))
    open(note.with_suffix(".fifo"), "rb")
elif mode == "busy":  # the interpreter busy in pure-Python work
    while True:
        sum(range(1000))
elif mode == "settled":  # the result is known; an interpreter exit that hangs on a thread
    import threading
    threading.Thread(target=time.sleep, args=(3600,)).start()
    dog.settle(7, within=0.5)
    sys.exit(7)
time.sleep(3600)
"""


@pytest.mark.parametrize("mode", ["fifo", "busy", "sleep"])
def test_the_watchdog_ends_a_blocked_or_busy_process(tmp_path: Path, mode: str) -> None:
    """A process stuck in open(2) on a FIFO, busy in Python, or asleep exits 1 at its deadline."""
    note = tmp_path / "note"
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode, str(note)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1, proc.stderr
    assert note.read_text() == "expired"
    assert time.monotonic() - started < 30  # ended by the watchdog, not by the test's timeout


def test_a_settled_watchdog_exits_with_the_result_without_reporting(tmp_path: Path) -> None:
    """Once settled, a process whose exit hangs on a worker thread exits with the settled code."""
    note = tmp_path / "note"
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, "settled", str(note)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 7, proc.stderr
    assert not note.exists()
