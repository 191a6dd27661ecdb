"""Read the published model from the shared volume (for model-serving containers).

``current()`` resolves ``<root>/current`` once and reads ``<dir>/pointer.json`` and
``<dir>/model`` from that one directory, so the pointer always describes the files it returns,
even while the sidecar flips to a new version. ``wait()`` blocks until a model is published;
``watch()`` yields every newly published version. The store keeps the previous versions for a
while (``--keep-versions``), so a model loaded from ``path`` stays readable during a flip.

``watch()`` listens to the root directory with watchfiles but never trusts the event types:
on any event, and at least every ``poll`` seconds without one, it re-reads ``current`` and
compares the resolved directory with the last one it yielded.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pointercache.model.pointer import Pointer

if TYPE_CHECKING:
    from collections.abc import Iterator

DEFAULT_ROOT = "/pointercache"
POLL_SECONDS = 0.5
"""Longest gap between two checks of ``current`` when no filesystem event arrives."""


@dataclass(frozen=True)
class LoadedModel:
    """One published version as seen by a reader."""

    pointer: Pointer
    """The version's pointer (what it is, where it came from, why)."""
    path: Path
    """The model itself (a directory or a single file) inside ``version_dir``."""
    version_dir: Path
    """The resolved version directory ``current`` pointed at when this was read."""


def current(root: str | Path = DEFAULT_ROOT) -> LoadedModel | None:
    """Return the published model, or None if nothing is published yet.

    Raise ``InvalidPointer`` if the published ``pointer.json`` does not validate.
    """
    base = Path(root).absolute()
    for _ in range(10):
        try:
            target = (base / "current").readlink()
        except FileNotFoundError:
            return None
        version_dir = base / target
        try:
            pointer = Pointer.read(version_dir / "pointer.json")
        except FileNotFoundError:
            continue  # flipped and collected between readlink and open: resolve again
        return LoadedModel(pointer=pointer, path=version_dir / "model", version_dir=version_dir)
    return None


def wait(
    root: str | Path = DEFAULT_ROOT, timeout: float | None = None, *, poll: float = POLL_SECONDS
) -> LoadedModel:
    """Block until a model is published and return it; ``TimeoutError`` after ``timeout`` s."""
    for loaded in watch(root, timeout=timeout, poll=poll):
        return loaded
    raise TimeoutError(f"no model published under {root} within {timeout} s")


def watch(
    root: str | Path = DEFAULT_ROOT,
    *,
    stop: threading.Event | None = None,
    timeout: float | None = None,
    poll: float = POLL_SECONDS,
) -> Iterator[LoadedModel]:
    """Yield the current model (if any), then each newly published one, exactly once per flip.

    Ends when ``stop`` is set or ``timeout`` seconds (in total) have passed.
    """
    stop = stop or threading.Event()
    deadline = None if timeout is None else time.monotonic() + timeout
    last: Path | None = None
    for _ in _ticks(Path(root), stop, deadline, poll):
        loaded = current(root)
        if loaded is not None and loaded.version_dir != last:
            last = loaded.version_dir
            yield loaded


def _ticks(
    root: Path, stop: threading.Event, deadline: float | None, poll: float
) -> Iterator[None]:
    """Yield once now, then on every change in ``root`` and at least every ``poll`` seconds."""
    import watchfiles

    yield
    while not stop.is_set() and not _expired(deadline):
        if not root.is_dir():
            stop.wait(_step(deadline, poll))
            yield
            continue
        try:
            for _changes in watchfiles.watch(
                root,
                watch_filter=None,
                recursive=False,
                debounce=200,
                step=20,
                rust_timeout=int(_step(deadline, poll) * 1000) or 1,
                yield_on_timeout=True,
                stop_event=stop,
                raise_interrupt=False,
            ):
                yield
                if stop.is_set() or _expired(deadline):
                    return
        except (OSError, RuntimeError):
            stop.wait(_step(deadline, poll))  # root replaced or unwatchable: poll instead
            yield


def _expired(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() >= deadline


def _step(deadline: float | None, poll: float) -> float:
    if deadline is None:
        return poll
    return max(0.0, min(poll, deadline - time.monotonic()))
