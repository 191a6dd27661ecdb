"""The sidecar's HTTP surface: health, readiness, status, metrics and a forced refresh.

- ``GET /healthz``: the process is alive (always 200 while the loop runs).
- ``GET /startupz``: 200 once a verified model is published (the native sidecar's startup
  probe: the model container starts only after it passes, so it must not wait for that
  container).
- ``GET /readyz``: with ``--ready-when published`` (default) the same as ``/startupz``; with
  ``--ready-when loaded``, 200 only once the model container has loaded a version staged here
  (acknowledged, hook or probe). It stays 200 while a newer version reloads or after a reload
  failed: the pod still serves a verified model, and ``/status`` says which.
- ``GET /status``: JSON — what is served, from where, how stale, why; the registry claim held
  for it; LKG, staged versions, last registry contact and error, fallback reason, blocked flip,
  refused (stale) answer and when it will be accepted, the download in flight (version, bytes,
  total, rate, seconds without a byte), versions held off after a failure, what the model
  container has loaded, recent history.
- ``GET /metrics``: Prometheus text from the registry the sidecar configured.
- ``POST /refresh``: re-resolve now, bypassing caches and the hold-off of failed versions. It
  answers within ``?wait=`` seconds (``REFRESH_WAIT`` by default, at most ``MAX_REFRESH_WAIT``):
  ``200`` with the outcome when the refresh ended by then, else ``202`` with ``"outcome":
  "in-progress"`` and the download in flight — the work goes on in the background. With
  ``--admin-token-file`` it needs ``Authorization: Bearer <token>``; without one it answers only
  to loopback clients.
- ``POST /loaded``: the model container acknowledges a load, ``{"version": ..., "digest": ...}``
  (``model.loaded.Ack``): 200 with what is now recorded, 400 for a malformed body, 409 with the
  reason when that version and digest are not staged on the volume. From loopback, or with the
  admin token.

No handler touches a file on the event loop: the files ``/status`` shows are read on a thread of
their own (``service.view``), so ``/healthz``, ``/readyz`` and ``/status`` answer while a refresh,
a download or a hung disk is busy.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from pointercache.base.blocking import abandon_after
from pointercache.errors import InvalidAck, NotStaged, PointercacheError
from pointercache.model.loaded import MAX_ACK_BYTES, Ack
from pointercache.service.refresher import Refresher
from pointercache.service.state import Outcome
from pointercache.volume.nodefile import read_node_file

REFRESHER = web.AppKey("refresher", Refresher)
METRICS: web.AppKey[Callable[[], tuple[bytes, str]]] = web.AppKey("metrics")
TOKEN_FILE = web.AppKey("token_file", Path)
BACKGROUND: web.AppKey[set[asyncio.Task[Outcome]]] = web.AppKey("background")

REFRESH_WAIT = 1.0
"""Seconds ``POST /refresh`` waits for the outcome before answering 202 (``?wait=`` changes it)."""
MAX_REFRESH_WAIT = 60.0
"""The largest ``?wait=`` accepted (seconds)."""
TOKEN_READ_WAIT = 1.0
"""Seconds the admin token file may take to read (a mounted Secret; 403 past it)."""


def _json(data: Any, status: int = 200) -> web.Response:
    body = orjson.dumps(data, option=orjson.OPT_INDENT_2, default=str)
    return web.Response(body=body, status=status, content_type="application/json")


def _seconds(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


async def status_document(refresher: Refresher) -> dict[str, Any]:
    """Build the ``/status`` JSON from the refresher's state and a view of the files."""
    state = refresher.state
    parts = refresher.parts
    current = state.current
    view = await refresher.view.get(current.digest if current else None)
    flight = refresher.flights.current
    return {
        "model": refresher.target.model,
        "selector": str(refresher.target.selector),
        "ready": not_ready(refresher) is None,
        "current": current.to_dict() if current else None,
        "staleness_seconds": _seconds(state.staleness()),
        "fallback_reason": state.fallback_reason,
        "blocked": state.blocked.to_dict() if state.blocked else None,
        "refused": state.refused.to_dict() if state.refused else None,
        "claim": (
            {"registry": state.claim.registry, "revision": state.claim.revision}
            if state.claim
            else None
        ),
        "prefetched": state.prefetched.to_dict() if state.prefetched else None,
        "in_flight": flight.to_dict() if flight else None,
        "held_off": refresher.failures.to_list(),
        "registry": {
            "sources": [s.name for s in parts.sources],
            "last_contact": state.last_contact,
            "last_error": state.last_error,
        },
        "last_refresh": state.last_refresh,
        "lkg": {"node": view["lkg_node"], "write_error": state.lkg_error},
        "staged": view["staged"],
        "files_read_at": view["as_of"],
        "history": list(state.history),
        **refresher.loads.status(),
    }


async def healthz(_request: web.Request) -> web.Response:
    """Liveness: the process answers."""
    return web.Response(text="ok\n")


async def startupz(request: web.Request) -> web.Response:
    """Start-up: a verified model is published."""
    if request.app[REFRESHER].state.current is None:
        return web.Response(status=503, text="no model published yet\n")
    return web.Response(text="published\n")


def not_ready(refresher: Refresher) -> str | None:
    """Why the pod is not ready (``/readyz`` 503 and ``/status.ready`` false), None if it is:
    a verified model is published (and loaded, with ``--ready-when loaded``)."""
    if refresher.state.current is None:
        return "no model published yet"
    loads = refresher.loads
    if loads.options.ready_when == "loaded" and not loads.ready:
        return "the model container has not loaded a model yet"
    return None


async def readyz(request: web.Request) -> web.Response:
    """Readiness: a verified model is published (and loaded, with ``--ready-when loaded``)."""
    why = not_ready(request.app[REFRESHER])
    if why is not None:
        return web.Response(status=503, text=f"{why}\n")
    return web.Response(text="ready\n")


async def status(request: web.Request) -> web.Response:
    """The status document."""
    return _json(await status_document(request.app[REFRESHER]))


async def metrics_text(request: web.Request) -> web.Response:
    """Prometheus exposition."""
    body, content_type = request.app[METRICS]()
    resp = web.Response(body=body)
    resp.headers["Content-Type"] = content_type
    return resp


def _loopback(request: web.Request) -> bool:
    try:
        return ipaddress.ip_address(request.remote or "").is_loopback
    except ValueError:
        return False


async def _authorized(request: web.Request) -> bool:
    token_file = request.app.get(TOKEN_FILE)
    if token_file is None:
        return _loopback(request)
    try:  # read off the loop and without blocking: a FIFO in its place is refused, not waited on
        data = await abandon_after(
            TOKEN_READ_WAIT, partial(read_node_file, token_file, max_bytes=4096, follow=True)
        )
        expected = data.decode().strip()
    except (OSError, UnicodeDecodeError, PointercacheError):
        return False
    given = request.headers.get("Authorization", "")
    return bool(expected) and hmac.compare_digest(given.encode(), f"Bearer {expected}".encode())


async def refresh(request: web.Request) -> web.Response:
    """Re-resolve now, bypassing caches; answer with the outcome within ``?wait=`` seconds."""
    if not await _authorized(request):
        return _json({"error": "forbidden"}, status=403)
    try:
        wait = float(request.query.get("wait", REFRESH_WAIT))
    except ValueError:
        wait = -1.0
    if not 0 <= wait <= MAX_REFRESH_WAIT:
        return _json({"error": f"wait: seconds from 0 to {MAX_REFRESH_WAIT:g}"}, status=400)
    refresher = request.app[REFRESHER]
    loop = asyncio.get_running_loop()
    until = loop.time() + wait
    task = asyncio.create_task(refresher.safe_refresh("forced", force=True))
    background = request.app[BACKGROUND]
    background.add(task)  # it goes on after the answer: keep a reference until it ends
    task.add_done_callback(background.discard)
    done, _ = await asyncio.wait({task}, timeout=wait)
    outcome: Outcome | None = task.result() if done else None
    if outcome is Outcome.IN_PROGRESS:
        outcome = await refresher.settled(until - loop.time()) or Outcome.IN_PROGRESS
    current = refresher.state.current
    flight = refresher.flights.current
    body: dict[str, Any] = {
        "outcome": outcome or Outcome.IN_PROGRESS,
        "current": current.to_dict() if current else None,
        "last_error": refresher.state.last_error,
        "in_flight": flight.to_dict() if flight else None,
    }
    if outcome in (None, Outcome.IN_PROGRESS):
        body["detail"] = "the refresh goes on in the background; GET /status shows its progress"
        return _json(body, status=202)
    return _json(body)


async def loaded(request: web.Request) -> web.Response:
    """Record the model container's acknowledgement of a load (``model.loaded.Ack``)."""
    if not (_loopback(request) or (TOKEN_FILE in request.app and await _authorized(request))):
        return _json({"error": "forbidden"}, status=403)
    body = b""
    while len(body) <= MAX_ACK_BYTES:  # at most one byte past the limit is ever read
        chunk = await request.content.read(MAX_ACK_BYTES + 1 - len(body))
        if not chunk:
            break
        body += chunk
    try:
        mark = await request.app[REFRESHER].loads.acknowledge(Ack.parse(body))
    except InvalidAck as exc:
        return _json({"error": str(exc)}, status=400)
    except NotStaged as exc:
        return _json({"error": str(exc)}, status=409)
    return _json({"loaded": mark.to_dict()})


def make_app(
    refresher: Refresher,
    *,
    metrics: Callable[[], tuple[bytes, str]],
    admin_token_file: Path | None = None,
) -> web.Application:
    """Build the aiohttp application."""
    app = web.Application()
    app[REFRESHER] = refresher
    app[METRICS] = metrics
    app[BACKGROUND] = set()
    if admin_token_file is not None:
        app[TOKEN_FILE] = admin_token_file
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/startupz", startupz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/status", status)
    app.router.add_get("/metrics", metrics_text)
    app.router.add_post("/refresh", refresh)
    app.router.add_post("/loaded", loaded)
    return app
