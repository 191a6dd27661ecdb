"""Make the model server reload, and learn when it has: ``--on-flip-url``, ``--loaded-probe-url``.

After a flip the sidecar POSTs to each ``--on-flip-url`` (in order) a JSON body describing the new
and the previous version::

    {"model": "recommender", "version": "9", "digest": "sha256:…", "revision": 12,
     "path": "/pointercache/versions/recommender/9-0123456789ab/model",
     "previous": {"version": "8", "digest": "sha256:…", "path": "…"}}      # or null

A 2xx answer means the server has loaded it (MLServer's ``POST /v2/repository/models/{name}/load``
answers once the model is loaded). A transient failure (no connection, timeout, 408/425/429, 5xx)
is retried with full-jitter backoff (``adapters.retry``); a refusal (3xx, 4xx) is not. Then, if
``--loaded-probe-url`` is set, it is polled (GET) until it answers 2xx. The whole reload is bounded
by ``--on-flip-timeout``: retries stop at that deadline (raising the last failure), each request
gets at most the time left, and the caller's ``asyncio.timeout`` on the same deadline stops a
request in flight; ``last_error`` says what the last attempt met. HTTP goes through
``adapters.http.send`` only.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from pointercache.adapters import http
from pointercache.adapters.retry import Backoff, aretrying, is_transient
from pointercache.base.log import log
from pointercache.base.redact import redact_text
from pointercache.errors import LoadError
from pointercache.model.loaded import UrlTemplate, Via
from pointercache.model.pointer import Pointer

HOOK_BACKOFF = Backoff(attempts=1_000_000, initial=0.2, maximum=5.0)
"""Retries of a hook: bounded by the reload's timeout, not by a count."""
PROBE_BACKOFF = Backoff(attempts=1_000_000, initial=0.05, maximum=1.0)
"""Polls of the probe: at most 1 s apart, so "loaded" is seen within a second of it."""


@dataclass(frozen=True, slots=True)
class Change:
    """One flip, as the hooks describe it."""

    pointer: Pointer
    """The version now published."""
    path: Path
    """Its artifact on the volume (``versions/<model>/<version>-<digest12>/model``)."""
    previous: Pointer | None = None
    """The version published before, if any."""
    previous_path: Path | None = None

    def body(self) -> bytes:
        """The JSON body of an ``--on-flip-url`` call."""
        previous: dict[str, Any] | None = None
        if self.previous is not None:
            previous = {
                "version": self.previous.version,
                "digest": self.previous.digest,
                "path": str(self.previous_path) if self.previous_path else None,
            }
        return orjson.dumps(
            {
                "model": self.pointer.model,
                "version": self.pointer.version,
                "digest": self.pointer.digest,
                "revision": self.pointer.revision,
                "path": str(self.path),
                "previous": previous,
            }
        )

    def url(self, template: UrlTemplate) -> str:
        """``template`` expanded for the new version."""
        p = self.pointer
        return template.expand(
            model=p.model, version=p.version, digest=p.digest, path=str(self.path)
        )


class ReloadHooks:
    """The configured hooks and probe; ``reload`` runs them for one flip."""

    def __init__(
        self,
        on_flip: Sequence[UrlTemplate] = (),
        probe: UrlTemplate | None = None,
        *,
        timeout: float = 120.0,
        hook_backoff: Backoff = HOOK_BACKOFF,
        probe_backoff: Backoff = PROBE_BACKOFF,
    ) -> None:
        self.on_flip = tuple(on_flip)
        self.probe = probe
        self.timeout = timeout
        """Seconds one hook call or probe may take (the reload as a whole is bounded too)."""
        self.hook_backoff = hook_backoff
        self.probe_backoff = probe_backoff
        self.last_error: str | None = None
        """What the last failed attempt met (redacted), for the give-up message."""

    @property
    def configured(self) -> bool:
        """True when there is a hook or a probe to run."""
        return bool(self.on_flip) or self.probe is not None

    async def reload(
        self, change: Change, *, hooks: bool = True, seconds: float | None = None
    ) -> Via:
        """Call every hook (unless ``hooks`` is False), then poll the probe; return how it loaded.

        Raises ``HookFailed`` when a hook refuses, and the last failure (a ``LoadError``) when
        ``seconds`` (default: ``timeout``) have passed.
        """
        self.last_error = None
        deadline = time.monotonic() + (self.timeout if seconds is None else seconds)
        if hooks:
            for template in self.on_flip:
                await self._call(template, change, deadline)
        if self.probe is not None:
            await self._poll(self.probe, change, deadline)
            return Via.PROBE
        return Via.HOOK

    async def _call(self, template: UrlTemplate, change: Change, deadline: float) -> None:
        url = change.url(template)
        what = f"reload hook {template}"
        async for attempt in aretrying(
            self.hook_backoff,
            retry_on=is_transient,
            before_sleep=self._note,
            stop=lambda _n: time.monotonic() >= deadline,
        ):
            with attempt:
                await http.send("POST", url, body=change.body(), seconds=_left(deadline), what=what)
        log.info("reload-hook-answered", version=change.pointer.version, hook=str(template))

    async def _poll(self, template: UrlTemplate, change: Change, deadline: float) -> None:
        url = change.url(template)
        what = f"loaded probe {template}"
        async for attempt in aretrying(
            self.probe_backoff,
            retry_on=lambda exc: isinstance(exc, LoadError),
            before_sleep=self._note,
            stop=lambda _n: time.monotonic() >= deadline,
        ):
            with attempt:
                await http.send("GET", url, seconds=min(_left(deadline), 10.0), what=what)

    def _note(self, exc: BaseException, _wait: float) -> None:
        self.last_error = redact_text(str(exc))


def _left(deadline: float) -> float:
    """Seconds until ``deadline`` plus a margin, so that the caller's ``asyncio.timeout`` on the
    same deadline fires first (aiohttp turns a cancellation that meets its own timeout into a
    ``TimeoutError``, which would read as one more transient failure)."""
    return max(0.1, deadline - time.monotonic()) + 1.0
