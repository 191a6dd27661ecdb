"""Files of the untrusted node directory: never blocked on, never followed, never read whole."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pointercache.errors import InvalidPointer, StoreLocked, UnsafeNodeFile
from pointercache.model.candidate import DEFAULT_SELECTOR
from pointercache.model.pointer import MAX_POINTER_BYTES
from pointercache.volume import layout
from pointercache.volume.lkg import NodeLKG, read_mounted
from pointercache.volume.nodefile import read_node_file
from tests.helpers import held_flock, make_pointer

MODEL = "recommender"
ENTRY = layout.lkg_entry(MODEL, DEFAULT_SELECTOR)
"""The node LKG entry of the default selector."""


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _zero_link(path: Path) -> None:
    path.symlink_to("/dev/zero")


def _directory(path: Path) -> None:
    path.mkdir()


def _socket(path: Path) -> None:
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    sock.close()  # the socket file stays


def _huge(path: Path) -> None:
    with path.open("wb") as fh:
        fh.truncate(MAX_POINTER_BYTES + 1)  # sparse: large without using the disk


def _link_to_regular(path: Path) -> None:
    target = path.with_name("elsewhere.json")
    target.write_bytes(make_pointer().to_json())
    path.symlink_to(target)


PLANTED: dict[str, tuple[Callable[[Path], None], str]] = {
    "fifo": (_fifo, "a FIFO"),
    "link to /dev/zero": (_zero_link, "symbolic link"),
    "link to a regular file": (_link_to_regular, "symbolic link"),
    "directory": (_directory, "a directory"),
    "socket": (_socket, "socket"),
    "huge file": (_huge, "over the"),
}


@pytest.mark.parametrize("kind", PLANTED)
def test_planted_files_are_refused_at_once(tmp_path: Path, kind: str) -> None:
    """A FIFO, link, directory, socket or huge file is refused in well under a second."""
    plant, reason = PLANTED[kind]
    path = tmp_path / ENTRY
    plant(path)
    started = time.monotonic()
    with pytest.raises(UnsafeNodeFile, match=reason):
        read_node_file(path, max_bytes=MAX_POINTER_BYTES)
    with pytest.raises(UnsafeNodeFile, match=reason):
        NodeLKG(tmp_path).read(MODEL, DEFAULT_SELECTOR)
    assert time.monotonic() - started < 1.0  # not a timing claim: a FIFO would block forever


def test_a_regular_file_is_read_and_a_missing_one_is_absent(tmp_path: Path) -> None:
    """A regular file comes back whole; a missing one raises FileNotFoundError (absent)."""
    path = tmp_path / "x.json"
    path.write_bytes(b"12345")
    assert read_node_file(path, max_bytes=5) == b"12345"
    with pytest.raises(UnsafeNodeFile, match="over the 4 limit"):
        read_node_file(path, max_bytes=4)
    assert read_node_file(path, max_bytes=4, keep_over=True) == b"12345"
    with pytest.raises(FileNotFoundError):
        read_node_file(tmp_path / "absent.json", max_bytes=5)


def test_a_mounted_configmap_link_is_followed_but_must_end_in_a_regular_file(
    tmp_path: Path,
) -> None:
    """The kubelet's ..data links are followed for the cluster LKG; /dev/zero behind one is not."""
    cluster = tmp_path / "cm"
    (cluster / "..2026_11_30").mkdir(parents=True)
    (cluster / "..2026_11_30" / ENTRY).write_bytes(make_pointer(version="5").to_json())
    (cluster / "..data").symlink_to("..2026_11_30")
    (cluster / ENTRY).symlink_to(f"..data/{ENTRY}")
    found = read_mounted(cluster, MODEL, DEFAULT_SELECTOR)
    assert found is not None and found.version == "5"
    (cluster / ENTRY).unlink()
    (cluster / ENTRY).symlink_to("/dev/zero")
    with pytest.raises(UnsafeNodeFile, match="character device"):
        read_mounted(cluster, MODEL, DEFAULT_SELECTOR)


@pytest.mark.parametrize(
    ("content", "reason"),
    [(b"{not json", "not valid JSON"), (make_pointer(model="fraud").to_json(), "'fraud'")],
)
def test_damaged_or_foreign_pointers_are_invalid(
    tmp_path: Path, content: bytes, reason: str
) -> None:
    """Broken JSON or another model's pointer is InvalidPointer naming the problem."""
    (tmp_path / ENTRY).write_bytes(content)
    with pytest.raises(InvalidPointer, match=reason):
        NodeLKG(tmp_path).read(MODEL, DEFAULT_SELECTOR)


@pytest.mark.parametrize("kind", [k for k in PLANTED if k != "directory"])
def test_a_write_replaces_a_planted_file_and_digests_skip_it(tmp_path: Path, kind: str) -> None:
    """Publishing over a planted file replaces it; referenced_digests skips planted files."""
    plant, _ = PLANTED[kind]
    lkg = NodeLKG(tmp_path)
    plant(tmp_path / "other.json")
    plant(tmp_path / ENTRY)
    pointer = make_pointer(revision=3)
    assert lkg.write(pointer, DEFAULT_SELECTOR)
    assert lkg.read(MODEL, DEFAULT_SELECTOR) == pointer
    assert lkg.referenced_digests() == {pointer.digest}


def test_a_directory_in_the_pointers_place_fails_the_write_loudly(tmp_path: Path) -> None:
    """A directory cannot be renamed over: the write raises OSError (a warning for callers)."""
    (tmp_path / ENTRY).mkdir()
    with pytest.raises(IsADirectoryError):
        NodeLKG(tmp_path).write(make_pointer(), DEFAULT_SELECTOR)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".pc-tmp-")]


def test_a_held_model_lock_makes_a_write_give_up(tmp_path: Path) -> None:
    """Another process holding the model's lock: write raises StoreLocked after lock_wait."""
    lkg = NodeLKG(tmp_path)
    with held_flock(tmp_path / ".locks" / f"lkg-{ENTRY}.lock"):
        started = time.monotonic()
        with pytest.raises(StoreLocked):
            lkg.write(make_pointer(), DEFAULT_SELECTOR, lock_wait=0.5)
        assert time.monotonic() - started < 5.0
    assert lkg.write(make_pointer(), DEFAULT_SELECTOR)
