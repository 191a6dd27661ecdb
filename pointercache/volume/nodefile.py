"""Reading a file of the node directory: never block on it, never follow it, never read much.

The node directory (``--lkg-dir``) is a hostPath shared by every pod on the node, so anything can
be planted there: a FIFO (whose ``open`` waits for a writer forever), a symlink to ``/dev/zero``
or to another pod's secret, a directory, a socket, a huge file. Every read of a file there goes
through ``read_node_file``:

- ``open`` with ``O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC`` — a FIFO opens at once instead
  of waiting for a writer (``fifo(7)``), a file under a lease does not wait for the lease to break
  (``fcntl(2)``, ``F_SETLEASE``), and a symbolic link is refused by the kernel (``ELOOP``,
  ``open(2)``);
- ``fstat`` on the descriptor that was opened: it must be a regular file (no race between a
  check and the open);
- at most ``max_bytes`` are read (one byte more to tell that it is over).

Anything else raises ``UnsafeNodeFile`` with a one-line reason; a missing file raises
``FileNotFoundError``. ``follow=True`` is for directories the kubelet mounts (a ConfigMap
volume's ``<key> -> ..data/<key>`` links are its design): the link is followed, but what it
leads to must still be a small regular file. A regular file on a hung network filesystem can
still block in ``read``; callers on an event loop run this in a thread with a bound.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from pointercache.errors import UnsafeNodeFile

MAX_SCAN = 4096
"""Directory entries ``scan`` looks at, at most: a node directory flooded with names costs a
bounded amount of work."""

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISLNK, "a symbolic link"),
)


def kind_of(mode: int) -> str:
    """What a file of ``mode`` is, in words ("a FIFO", "a regular file"...)."""
    for test, name in _KINDS:
        if test(mode):
            return name
    return "a regular file" if stat.S_ISREG(mode) else "a special file"


def read_node_file(
    path: Path, *, max_bytes: int, follow: bool = False, keep_over: bool = False
) -> bytes:
    """The bytes of the regular file ``path``, at most ``max_bytes`` of them.

    ``FileNotFoundError`` if it does not exist; ``UnsafeNodeFile`` if it is a symlink (unless
    ``follow``), a FIFO, device, socket or directory, or larger than ``max_bytes`` (with
    ``keep_over``, its first ``max_bytes + 1`` bytes are returned instead, for a parser that
    reports the size itself); other ``OSError``s (``EACCES``, ``EIO``) unchanged.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafeNodeFile(
                f"{path}: a symbolic link; node files are never followed"
            ) from None
        if exc.errno == errno.ENXIO:  # a UNIX socket (or a FIFO opened for writing)
            raise UnsafeNodeFile(f"{path}: a socket, not a regular file") from None
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):  # a lease held by another process
            raise UnsafeNodeFile(f"{path}: held by a lease of another process") from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnsafeNodeFile(f"{path}: {kind_of(info.st_mode)}, not a regular file")
        if info.st_size > max_bytes and not keep_over:
            raise UnsafeNodeFile(f"{path}: {info.st_size} bytes is over the {max_bytes} limit")
        data = _read_up_to(fd, max_bytes + 1)
    finally:
        os.close(fd)
    if len(data) > max_bytes and not keep_over:
        raise UnsafeNodeFile(f"{path}: grew over the {max_bytes} limit while read")
    return data


def scan(directory: Path, suffix: str) -> Iterator[Path]:
    """Names in ``directory`` ending in ``suffix`` (at most ``MAX_SCAN`` entries looked at).

    Nothing is opened or followed; a missing directory yields nothing.
    """
    try:
        entries = os.scandir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return
    with entries:
        for seen, entry in enumerate(entries):
            if seen >= MAX_SCAN:
                return
            if entry.name.endswith(suffix):
                yield Path(entry.path)


def _read_up_to(fd: int, limit: int) -> bytes:
    chunks: list[bytes] = []
    left = limit
    while left > 0:
        chunk = os.read(fd, min(left, 1 << 16))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)
