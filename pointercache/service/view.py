"""What ``/status`` shows of the files (staged versions, the node LKG), read off the event loop.

Reading them touches the shared volume and the node directory, which is untrusted and may sit on
a slow or hung disk. ``VolumeView.get`` never reads on the event loop: one read at a time runs on
a daemon thread of its own (so a read that hangs holds one thread — not the loop, not the default
executor, not the process's exit), ``/status`` waits for it at most ``within`` seconds, and
otherwise answers with the last view it has (``as_of`` says when it was read; ``pending`` that a
read is running).
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from pointercache.base.blocking import in_daemon_thread
from pointercache.base.clock import utcnow
from pointercache.base.redact import redact_text
from pointercache.errors import PointercacheError

if TYPE_CHECKING:
    from pointercache.sync.wiring import Parts

MAX_AGE = 2.0
"""Seconds a view is reused before ``get`` reads again."""
WITHIN = 0.5
"""Seconds ``get`` waits for a read before answering with the last view."""


class VolumeView:
    """The staged versions and the node LKG as ``/status`` shows them."""

    def __init__(self, parts: Parts, *, within: float = WITHIN, max_age: float = MAX_AGE) -> None:
        self.parts = parts
        self.within = within
        self.max_age = max_age
        self._view: dict[str, Any] = {"staged": [], "lkg_node": None, "as_of": None}
        self._read_at: float | None = None
        self._pending: asyncio.Future[dict[str, Any]] | None = None

    def invalidate(self) -> None:
        """The files changed (a flip): the next ``get`` reads them again."""
        self._read_at = None

    async def get(self, current_digest: str | None) -> dict[str, Any]:
        """The latest view; reads again when older than ``max_age`` (waiting ``within`` s)."""
        fresh = self._read_at is not None and time.monotonic() - self._read_at < self.max_age
        if not fresh and self._pending is None:
            self._pending = in_daemon_thread(self._read)
            self._pending.add_done_callback(self._landed)
        if self._pending is not None:
            await asyncio.wait({self._pending}, timeout=self.within)
        view = dict(self._view)
        view["pending"] = self._pending is not None
        view["staged"] = [
            {**entry, "current": entry.get("digest") == current_digest} for entry in view["staged"]
        ]
        return view

    def _landed(self, future: asyncio.Future[dict[str, Any]]) -> None:
        self._pending = None
        if future.cancelled():
            return
        if future.exception() is None:
            self._view = future.result()
            self._read_at = time.monotonic()

    def _read(self) -> dict[str, Any]:
        parts = self.parts
        model = parts.target.model
        staged: list[dict[str, Any]] = []
        try:
            for version_dir, pointer in parts.store.versions(model):
                staged.append(
                    {"version": pointer.version, "digest": pointer.digest, "dir": version_dir.name}
                )
        except (OSError, PointercacheError) as exc:
            staged.append({"error": redact_text(str(exc))})
        lkg_node: dict[str, Any] | None = None
        if parts.lkg is not None:
            try:
                found = parts.lkg.read(model, parts.target.selector)
                lkg_node = found.to_dict() if found else None
            except (OSError, PointercacheError) as exc:
                lkg_node = {"error": redact_text(f"{type(exc).__name__}: {exc}")}
        return {"staged": staged, "lkg_node": lkg_node, "as_of": utcnow()}
