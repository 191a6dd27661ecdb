"""The single-writer lock: real processes contend for one volume and cannot both write."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pointercache.errors import StoreLocked
from pointercache.model.digest import tree_digest
from pointercache.volume.store import Store
from tests.volume.driver import EXIT_LOCKED

REPO = Path(__file__).resolve().parents[2]
HOLDER = """
import sys
from pathlib import Path
from pointercache.volume.store import Store
store = Store(Path(sys.argv[1]))
with store.lock():
    print("locked", flush=True)
    sys.stdin.read()
"""


def _holder(root: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(root)],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == "locked\n"
    return proc


def test_a_second_process_cannot_take_the_lock(tmp_path: Path) -> None:
    """While one process holds the lock, another gets StoreLocked naming the holder's pid."""
    root = tmp_path / "root"
    holder = _holder(root)
    try:
        with pytest.raises(StoreLocked, match=f"pid {holder.pid}"), Store(root).lock(timeout=0.2):
            pass
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait()
        assert holder.stdout is not None
        holder.stdout.close()
    with Store(root).lock(timeout=0):
        pass


def test_the_lock_dies_with_a_killed_holder(tmp_path: Path) -> None:
    """A SIGKILLed writer releases the lock at once, so a restarted writer is not blocked."""
    root = tmp_path / "root"
    holder = _holder(root)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    for stream in (holder.stdin, holder.stdout):
        assert stream is not None
        stream.close()
    with Store(root).lock(timeout=0):
        pass


def test_two_store_objects_in_one_process_also_exclude_each_other(tmp_path: Path) -> None:
    """The lock is per open file, so a second Store on the same root is refused; nesting is fine."""
    first = Store(tmp_path / "root")
    with first.lock(), first.lock():
        with pytest.raises(StoreLocked), Store(tmp_path / "root").lock():
            pass
        assert first.new_staging_dir().is_dir()


def test_two_writer_processes_cannot_corrupt_the_volume(tmp_path: Path) -> None:
    """A second crash-loop writer exits 'locked' while the first runs; the volume stays valid."""
    root = tmp_path / "root"
    cmd = [sys.executable, "-m", "tests.volume.driver", str(root)]
    first = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert first.stdout is not None
        assert first.stdout.readline().startswith(b"ready")
        second = subprocess.run(
            [*cmd, "--seed", "1", "--lock-timeout", "0.3"],
            cwd=REPO,
            capture_output=True,
            check=False,
        )
        assert second.returncode == EXIT_LOCKED
        assert f"pid {first.pid}".encode() in second.stderr
        assert first.poll() is None
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
        assert first.stdout is not None
        first.stdout.close()
    store = Store(root)
    with store.lock():
        store.recover()
        pointer = store.current()
        assert pointer is not None
        assert tree_digest(root / "model") == (pointer.digest, pointer.size_bytes)
        assert list(store.staging_dir.iterdir()) == []
