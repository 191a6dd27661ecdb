"""A store writer that loops forever: stage, install, publish, gc. Made to be SIGKILLed.

Run from the repository root::

    python -m tests.volume.driver ROOT [--seed N] [--iterations N] [--stats FILE] [--lock-timeout S]

It takes the store lock, runs ``recover()``, prints ``ready`` on stdout, then loops. Each
iteration stages a version (deterministic bytes per version, so re-staging a version gives the
same digest and takes the reinstall path), installs it, sometimes only rewrites an installed
version's pointer or rolls back to an older installed version, publishes, and collects garbage
(sometimes protecting a digest). Each finished iteration appends one line to ``--stats``.
Exit status 75 means another writer holds the lock. ``--die-at-sync FILE`` makes the store's
tree sync write ``dir PATH`` or ``file PATH`` to FILE and SIGKILL the writer right there.

``--fork-server`` starts each writer faster, for kill loops on a busy machine: the process
imports everything once, then for each ``spawn SEED`` line on stdin forks a fresh writer
(which prints ``ready PID`` once it holds the lock and has recovered), waits for it and prints
``exit PID STATUS``. The writers are real processes; kill them with ``os.kill(PID, SIGKILL)``.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import cast

from pointercache.errors import StoreLocked
from pointercache.model.digest import tree_digest
from pointercache.model.pointer import SOURCE_KINDS, SourceKind
from pointercache.volume.fsutil import sync_tree
from pointercache.volume.store import Store
from tests.volume.artifacts import MODEL, make_pointer, write_version_files

EXIT_LOCKED = 75
VERSIONS = 40


def one_iteration(store: Store, rng: random.Random, revision: int) -> str:
    """Run one stage-install-publish-gc round; return what was published."""
    version = str(rng.randrange(VERSIONS))
    source = cast("SourceKind", rng.choice(SOURCE_KINDS))
    installed = store.versions(MODEL)
    if installed and rng.random() < 0.1:
        target, _ = rng.choice(installed)  # roll back (or forward) to an installed version
    else:
        target = _install(store, version, revision, source, rng)
    store.publish(target)
    protect = {rng.choice(installed)[1].digest} if installed and rng.random() < 0.2 else set()
    store.gc(protect)
    return target.name


def _install(
    store: Store, version: str, revision: int, source: SourceKind, rng: random.Random
) -> Path:
    staging = store.new_staging_dir()
    artifact = write_version_files(staging / "model", version)
    digest, size = tree_digest(artifact)
    pointer = make_pointer(
        version, digest, size, revision=revision, source=source, detail=f"driver {os.getpid()}"
    )
    existing = store.find(MODEL, digest)
    if existing is not None and existing.name == pointer.short and rng.random() < 0.5:
        store.update_pointer(existing, pointer)  # provenance change only
        store.install(artifact, pointer)  # and the reinstall path, which discards the staging
        return existing
    return store.install(artifact, pointer)


def die_at_sync(marker: Path) -> Callable[[Path], None]:
    """A ``Store`` sync that records what it was asked to make durable, then SIGKILLs us."""

    def sync(artifact: Path) -> None:
        kind = "dir" if artifact.is_dir() else "file"
        marker.write_text(f"{kind} {artifact}\n")
        os.kill(os.getpid(), signal.SIGKILL)

    return sync


def run(
    root: Path,
    *,
    seed: int,
    iterations: int | None,
    stats: Path | None,
    lock_timeout: float = 30.0,
    sync: Callable[[Path], None] = sync_tree,
) -> int:
    """Lock, recover, signal readiness, then loop; return the exit status."""
    store = Store(root, keep_versions=2, sync=sync)
    rng = random.Random(seed)
    try:
        with store.lock(timeout=lock_timeout):
            store.recover()
            sys.stdout.write(f"ready {os.getpid()}\n")
            sys.stdout.flush()
            done = 0
            stats_fd = os.open(stats, os.O_WRONLY | os.O_APPEND | os.O_CREAT) if stats else None
            while iterations is None or done < iterations:
                name = one_iteration(store, rng, revision=seed * 100_000 + done)
                done += 1
                if stats_fd is not None:
                    os.write(stats_fd, f"{name}\n".encode())
    except StoreLocked as exc:
        sys.stderr.write(f"locked: {exc}\n")
        return EXIT_LOCKED
    return 0


def serve_forks(root: Path, *, stats: Path | None, lock_timeout: float) -> int:
    """Fork one writer per ``spawn SEED`` line on stdin; report each one's exit status."""
    for line in sys.stdin:
        seed = int(line.split()[1])
        pid = os.fork()
        if pid == 0:
            os._exit(run(root, seed=seed, iterations=None, stats=stats, lock_timeout=lock_timeout))
        _, status = os.waitpid(pid, 0)
        code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        sys.stdout.write(f"exit {pid} {code}\n")
        sys.stdout.flush()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run the loop."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--iterations", type=int, default=None, help="default: forever")
    parser.add_argument("--stats", type=Path, default=None)
    parser.add_argument("--lock-timeout", type=float, default=30.0)
    parser.add_argument("--fork-server", action="store_true", help="fork writers on demand")
    parser.add_argument(
        "--die-at-sync", type=Path, default=None, help="SIGKILL at the first tree sync, noted here"
    )
    args = parser.parse_args(argv)
    if args.fork_server:
        return serve_forks(args.root, stats=args.stats, lock_timeout=args.lock_timeout)
    return run(
        args.root,
        seed=args.seed,
        iterations=args.iterations,
        stats=args.stats,
        lock_timeout=args.lock_timeout,
        sync=die_at_sync(args.die_at_sync) if args.die_at_sync else sync_tree,
    )


if __name__ == "__main__":
    sys.exit(main())
