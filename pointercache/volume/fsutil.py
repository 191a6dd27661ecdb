"""Durable filesystem primitives: fsync'd writes, atomic renames, symlink swaps, tree copies.

Every helper here either completes or leaves the destination as it was: data goes to a temporary
name in the destination's directory (prefix ``TMP_PREFIX``), is fsynced, renamed over the final
name, and the directory is fsynced so the rename survives a power cut. A crash leaves at most a
``TMP_PREFIX`` file or link behind, which ``Store.recover`` removes.

These helpers raise ``OSError`` unchanged; callers translate it at their boundary (``Store`` turns
it into ``StoreError``). ``write`` parameters exist so tests can inject a failing writer (a full
disk) through our own code instead of patching the OS.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import os
import secrets
import shutil
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast

TMP_PREFIX = ".pc-tmp-"
"""Prefix of every temporary file or link these helpers create; safe to delete after a crash."""

CHUNK = 1 << 20
"""Copy buffer size (1 MiB): bounded memory whatever the artifact size."""

FILE_MODE = 0o644
"""Mode of every published file, whatever the process umask: the model container may run as
another user (readable by all, writable by the owner only)."""
DIR_MODE = 0o755
"""Mode of every published directory, whatever the process umask."""

Writer = Callable[[int, memoryview], int]
"""``os.write``-compatible callable: ``(fd, data) -> bytes written``."""


def tmp_name(final: Path) -> Path:
    """Return a fresh temporary path next to ``final`` (same directory, so same filesystem)."""
    return final.with_name(f"{TMP_PREFIX}{final.name}-{secrets.token_hex(4)}")


def fsync_dir(path: Path) -> None:
    """Fsync a directory so the names created, renamed or removed in it are durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    """Fsync a regular file's data and metadata."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes | memoryview, write: Writer = os.write) -> None:
    """Write every byte of ``data`` to ``fd``, looping over short writes."""
    view = memoryview(data)
    while view:
        done = write(fd, view)
        view = view[done:]


def atomic_write_bytes(
    path: Path, data: bytes, *, write: Writer = os.write, mode: int = 0o644
) -> None:
    """Replace ``path`` with ``data``: temp in the same dir, write, fsync, rename, fsync dir."""
    tmp = tmp_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        try:
            os.fchmod(fd, mode)  # the umask (077, say) must not narrow a published file
            write_all(fd, data, write)
            os.fsync(fd)
        finally:
            os.close(fd)
        tmp.replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def atomic_symlink(target: str, link: Path) -> None:
    """Point ``link`` at ``target`` with one rename of a temp link, then fsync the directory."""
    tmp = tmp_name(link)
    tmp.symlink_to(target)
    try:
        tmp.replace(link)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(link.parent)


class LockBusy(BlockingIOError):
    """Another open file holds the ``flock``; ``holder`` is the pid written in the lock file."""

    def __init__(self, path: Path, holder: str) -> None:
        super().__init__(errno.EWOULDBLOCK, "lock is held", str(path))
        self.holder = holder


def flock_exclusive(path: Path, *, timeout: float) -> int:
    """Open (create) ``path``, take an exclusive ``flock`` within ``timeout`` s, write our pid.

    Return the open fd; closing it releases the lock (so does the process dying, even by
    SIGKILL). Raise ``LockBusy`` if another open file keeps the lock for ``timeout`` seconds.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                left = deadline - time.monotonic()
                if left <= 0:
                    holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                    raise LockBusy(path, holder) from None
                time.sleep(min(0.05, left))
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except BaseException:
        os.close(fd)
        raise
    return fd


def lock_beside(path: Path) -> Path:
    """The lock file guarding read-modify-writes of ``path``: ``.<name>.lock`` in its directory.

    Every writer of a manifest file takes it (``pointercache publish``, ``pointercache promote``).
    """
    return path.with_name(f".{path.name}.lock")


@contextlib.contextmanager
def held(lock: Path, *, timeout: float) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock`` while the block runs (``LockBusy`` after
    ``timeout`` seconds); a killed holder releases it."""
    fd = flock_exclusive(lock, timeout=timeout)
    try:
        yield
    finally:
        os.close(fd)


def remove_path(path: Path, *, ignore_errors: bool = False) -> None:
    """Remove a file, link or whole directory tree; a missing path is fine.

    ``ignore_errors`` is for clean-up after a failure, where the first error matters more.
    """
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=ignore_errors)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def publish_modes(path: Path) -> None:
    """Give ``path`` and everything under it the published modes: ``FILE_MODE`` for regular
    files, ``DIR_MODE`` for directories, whatever umask or fetcher created them (symlinks are
    left alone; an artifact has none)."""
    if path.is_symlink():
        return
    if not path.is_dir():
        path.chmod(FILE_MODE)
        return
    path.chmod(DIR_MODE)
    for dirpath, dirs, files in os.walk(path):
        for name in dirs:
            Path(dirpath, name).chmod(DIR_MODE, follow_symlinks=False)
        for name in files:
            Path(dirpath, name).chmod(FILE_MODE, follow_symlinks=False)


def fsync_tree(path: Path) -> None:
    """Fsync every regular file and directory under ``path`` (or ``path`` itself if a file)."""
    if not path.is_dir() or path.is_symlink():
        fsync_file(path)
        return
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            fsync_file(Path(dirpath, name))
        fsync_dir(Path(dirpath))


@functools.cache
def _libc_syncfs() -> Callable[[int], int] | None:
    """libc's ``syncfs`` (Linux ≥ 2.6.39, glibc ≥ 2.14, musl), or None where there is none.

    The standard library has ``os.sync`` (every filesystem) and ``os.fsync`` (one file) only.
    """
    import ctypes  # only a process that installs or copies a tree needs it

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        func = libc.syncfs
    except (OSError, AttributeError):
        return None
    func.argtypes, func.restype = [ctypes.c_int], ctypes.c_int
    return cast("Callable[[int], int]", func)


def _errno() -> int:
    import ctypes  # loaded already by _libc_syncfs

    return ctypes.get_errno()


def syncfs(path: Path) -> bool:
    """Flush the whole filesystem that holds ``path`` with one ``syncfs(2)``; False if unsupported.

    syncfs writes back every dirty page and inode of that filesystem and commits its journal,
    so it covers a whole tree's files *and* directory entries at once. Since Linux 5.8 it reports
    a writeback error of the filesystem (``errseq``, the same tracking fsync uses) as ``OSError``
    (EIO, ENOSPC...); ``ENOSYS`` (a seccomp profile or kernel without it) returns False.
    It also flushes other writers' dirty data on that filesystem, which an ext4/xfs journal
    commit triggered by fsync does too.
    """
    func = _libc_syncfs()
    if func is None:
        return False
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        if func(fd) == 0:
            return True
        err = _errno()
    finally:
        os.close(fd)
    if err in (errno.ENOSYS, errno.EPERM):  # seccomp denies it with either
        return False
    raise OSError(err, os.strerror(err), str(path))


def sync_tree(path: Path) -> None:
    """Make every file and directory under ``path`` durable: one ``syncfs``, else fsync each.

    Raises ``OSError`` when the sync reports a writeback error: the tree must not be published.
    """
    if not syncfs(path):
        fsync_tree(path)


def copy_file(src: Path, dst: Path, *, write: Writer = os.write, sync: bool = True) -> None:
    """Copy one regular file's bytes to a new ``dst`` in 1 MiB chunks; fsync it if ``sync``."""
    mode = stat.S_IMODE(src.stat().st_mode) | stat.S_IRUSR | stat.S_IWUSR
    with src.open("rb") as fin:
        fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        try:
            while chunk := fin.read(CHUNK):
                write_all(fd, chunk, write)
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)


def _link_or_copy(src: Path, dst: Path, write: Writer, *, try_link: bool) -> bool:
    """Hardlink ``src`` to ``dst`` if allowed and possible, else copy; return whether linked."""
    if try_link:
        try:
            os.link(src, dst, follow_symlinks=False)
        except OSError:
            pass  # another filesystem, or links not permitted: copy instead
        else:
            return True
    copy_file(src, dst, write=write, sync=False)
    return False


def copy_tree_or_link(
    src: Path, dst: Path, *, write: Writer = os.write, durable: bool = True
) -> None:
    """Copy a file or directory tree to a new ``dst``: hardlink files on the same filesystem.

    Only regular files and directories are copied; anything else raises ``OSError``. The copy
    (files, linked or copied, and directories) is made durable by one ``sync_tree`` at the end,
    not one fsync per file; ``durable=False`` skips it for a copy into staging that the store
    syncs when it installs it. ``dst`` must not exist. An injected ``write`` always copies.
    """
    try_link = write is os.write and src.stat().st_dev == dst.parent.stat().st_dev
    if not src.is_dir():
        _check_regular(src)
        _link_or_copy(src, dst, write, try_link=try_link)
        if durable:
            sync_tree(dst)
            fsync_dir(dst.parent)
        return
    dst.mkdir()
    for dirpath, dirs, files in os.walk(src):
        rel = Path(dirpath).relative_to(src)
        target = dst / rel
        for name in dirs:
            _check_dir(Path(dirpath, name))
            (target / name).mkdir()
        for name in files:
            _check_regular(Path(dirpath, name))
            if not _link_or_copy(Path(dirpath, name), target / name, write, try_link=try_link):
                try_link = False
    if durable:
        sync_tree(dst)
        fsync_dir(dst.parent)


def _check_regular(path: Path) -> None:
    if not stat.S_ISREG(path.lstat().st_mode):
        raise OSError(errno.EINVAL, "not a regular file", str(path))


def _check_dir(path: Path) -> None:
    if not stat.S_ISDIR(path.lstat().st_mode):
        raise OSError(errno.EINVAL, "not a directory", str(path))


FICLONE = 0x40049409
"""``ioctl`` request of Linux's FICLONE (``_IOW(0x94, 9, int)``): share extents copy-on-write."""
MAX_COPY_DEPTH = 64
MAX_COPY_ENTRIES = 100_000
_READ_UNTRUSTED = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class _Budget:
    """What a ``copy_tree`` may still write: bytes and entries."""

    def __init__(self, max_bytes: int | None) -> None:
        self.bytes = max_bytes
        self.entries = MAX_COPY_ENTRIES

    def take(self, size: int, where: str) -> None:
        self.entries -= 1
        if self.entries < 0:
            raise OSError(errno.EFBIG, f"more than {MAX_COPY_ENTRIES} entries", where)
        if self.bytes is not None:
            self.bytes -= size
            if self.bytes < 0:
                raise OSError(errno.EFBIG, "over the size limit", where)


def copy_tree(src: Path, dst: Path, *, max_bytes: int | None = None) -> None:
    """Copy a file or directory tree to a new ``dst`` that shares no inode with ``src``.

    For a source another process may write (the node cache): ``dst`` never hard-links ``src``,
    so a later write to ``src`` cannot reach it; each file is cloned copy-on-write (FICLONE)
    where the filesystem can, else copied byte by byte. ``src`` is read through directory file
    descriptors with ``O_NOFOLLOW | O_NONBLOCK`` and every opened file is checked with
    ``fstat``: a symlink, FIFO, device or socket anywhere raises ``OSError(EINVAL)``, never
    blocks and is never followed. More than ``max_bytes`` bytes (by ``fstat`` size),
    ``MAX_COPY_ENTRIES`` entries or ``MAX_COPY_DEPTH`` levels raise ``OSError(EFBIG)``. Files
    and directories are fsynced. ``dst`` must not exist; on error it may be left partial (the
    caller removes it).
    """
    budget = _Budget(max_bytes)
    info = os.lstat(src)
    if stat.S_ISDIR(info.st_mode):
        fd = os.open(src, _OPEN_DIR)
        try:
            _copy_dir(fd, dst, budget, 0)
        finally:
            os.close(fd)
    elif stat.S_ISREG(info.st_mode):
        fd = os.open(src, _READ_UNTRUSTED)
        try:
            _copy_fd(fd, dst, budget)
        finally:
            os.close(fd)
    else:
        raise OSError(errno.EINVAL, "not a regular file or directory", str(src))
    fsync_dir(dst.parent)


def _copy_dir(fd: int, dst: Path, budget: _Budget, depth: int) -> None:
    if depth > MAX_COPY_DEPTH:
        raise OSError(errno.EFBIG, f"deeper than {MAX_COPY_DEPTH} levels", str(dst))
    dst.mkdir()
    with os.scandir(fd) as entries:
        names = sorted(entry.name for entry in entries)
    for name in names:
        try:
            child = os.open(name, _READ_UNTRUSTED, dir_fd=fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # O_NOFOLLOW met a symlink
                raise OSError(errno.EINVAL, "a symlink", str(dst / name)) from exc
            raise
        try:
            mode = os.fstat(child).st_mode
            if stat.S_ISDIR(mode):
                budget.take(0, str(dst / name))
                _copy_dir(child, dst / name, budget, depth + 1)
            elif stat.S_ISREG(mode):
                _copy_fd(child, dst / name, budget)
            else:
                raise OSError(errno.EINVAL, "not a regular file or directory", str(dst / name))
        finally:
            os.close(child)
    fsync_dir(dst)


def _copy_fd(fd: int, dst: Path, budget: _Budget) -> None:
    """Copy the regular file open at ``fd`` to a new ``dst`` (clone if possible), fsynced."""
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        raise OSError(errno.EINVAL, "not a regular file", str(dst))
    budget.take(info.st_size, str(dst))
    out = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.ioctl(out, FICLONE, fd)
        except OSError:  # another filesystem, or one without reflinks: copy the bytes
            os.lseek(fd, 0, os.SEEK_SET)
            copied = 0
            while chunk := os.read(fd, CHUNK):
                copied += len(chunk)
                if copied > info.st_size:  # it grew while we copied: refuse, do not chase it
                    raise OSError(errno.EFBIG, "grew while being copied", str(dst)) from None
                write_all(out, chunk)
        os.fsync(out)
    finally:
        os.close(out)
