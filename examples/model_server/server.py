"""The example model server: HTTP on the standard library, the model from the shared volume.

Endpoints:
  GET  /health/live   200 while the process answers
  GET  /health/ready  200 once a model is loaded, 503 before
  GET  /model         the pointer of the model being served (version, digest, source, ...)
  POST /predict       {"features": {"amount": 120.0, "age_days": 3}} -> {"prediction": ...}

A background thread follows ``pointercache.reader.watch``: every version the sidecar publishes is
loaded and swapped in whole; a version that fails to load is logged and the previous one keeps
serving. Requests in flight finish on the model object they started with. With ``--ack-url``
each load is acknowledged to the sidecar (``pointercache.reader.acknowledge``), so the pod's
status, annotations and readiness (``--ready-when loaded``) reflect what this process serves.
"""

from __future__ import annotations

import argparse
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any

import orjson

from model_server.model import LinearModel, ModelError, load
from pointercache import reader
from pointercache.adapters.retry import Backoff, retrying
from pointercache.base.clock import utcnow
from pointercache.base.log import log
from pointercache.errors import PointercacheError, Transient

MAX_BODY_BYTES = 64 << 10
RETRY_SECONDS = 1.0
ACK_SECONDS = 30.0
"""How long a load keeps trying to reach the sidecar (a classic sidecar may start later)."""


@dataclass(frozen=True)
class Serving:
    """The model being served and the pointer that describes it."""

    loaded: reader.LoadedModel
    model: LinearModel
    loaded_at: str


class State:
    """What the request threads read and the reload thread replaces (one reference swap)."""

    def __init__(self) -> None:
        self.serving: Serving | None = None
        self.last_error: str | None = None

    def swap(self, serving: Serving) -> None:
        """Serve ``serving`` from the next request on."""
        self.serving = serving
        self.last_error = None


def follow(root: Path, state: State, stop: threading.Event, ack_url: str | None = None) -> None:
    """Load the published model, then each new version, until ``stop`` is set."""
    while not stop.is_set():
        try:
            for loaded in reader.watch(root, stop=stop):
                if _load(loaded, state) and ack_url:
                    acknowledge(loaded, ack_url, stop)
        except PointercacheError as exc:  # a damaged pointer.json: keep serving, look again
            state.last_error = str(exc)
            log.error("model-watch-failed", root=str(root), error=str(exc))
            stop.wait(RETRY_SECONDS)


def acknowledge(loaded: reader.LoadedModel, url: str, stop: threading.Event) -> bool:
    """Tell the sidecar this version is loaded, retrying while it does not answer (bounded)."""
    deadline = time.monotonic() + ACK_SECONDS

    def pause(seconds: float) -> None:
        stop.wait(seconds)

    try:
        for attempt in retrying(
            Backoff(attempts=1_000_000, initial=0.1, maximum=2.0),
            retry_on=lambda exc: isinstance(exc, Transient),
            sleep=pause,
            stop=lambda _n: stop.is_set() or time.monotonic() >= deadline,
        ):
            with attempt:
                reader.acknowledge(loaded, url=url)
    except PointercacheError as exc:
        log.error("model-ack-failed", version=loaded.pointer.version, error=str(exc))
        return False
    log.info("model-acknowledged", version=loaded.pointer.version)
    return True


def _load(loaded: reader.LoadedModel, state: State) -> bool:
    pointer = loaded.pointer
    try:
        model = load(loaded.path)
    except ModelError as exc:
        state.last_error = f"version {pointer.version}: {exc}"
        log.error("model-load-failed", version=pointer.version, error=str(exc))
        return False
    previous = state.serving
    state.swap(Serving(loaded=loaded, model=model, loaded_at=utcnow()))
    log.info(
        "model-loaded",
        model=pointer.model,
        version=pointer.version,
        digest=pointer.digest,
        source=pointer.source,
        previous=previous.loaded.pointer.version if previous else None,
    )
    return True


class Handler(BaseHTTPRequestHandler):
    """Routes the four endpoints; JSON in and out."""

    server: ModelHTTPServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        """Serve the health checks and the model's pointer."""
        serving = self.server.state.serving
        if self.path == "/health/live":
            self._send(HTTPStatus.OK, {"status": "alive"})
        elif self.path == "/health/ready":
            if serving is None:
                reason = self.server.state.last_error or "no model loaded yet"
                self._send(HTTPStatus.SERVICE_UNAVAILABLE, {"status": "loading", "reason": reason})
            else:
                self._send(
                    HTTPStatus.OK, {"status": "ready", "version": serving.loaded.pointer.version}
                )
        elif self.path == "/model":
            if serving is None:
                self._send(HTTPStatus.SERVICE_UNAVAILABLE, {"error": "no model loaded yet"})
            else:
                body = {
                    "pointer": serving.loaded.pointer.to_dict(),
                    "loaded_at": serving.loaded_at,
                    "last_error": self.server.state.last_error,
                }
                self._send(HTTPStatus.OK, body)
        else:
            self._send(HTTPStatus.NOT_FOUND, {"error": f"no route {self.path}"})

    def do_POST(self) -> None:
        """Score one row with the model being served."""
        if self.path != "/predict":
            self._send(HTTPStatus.NOT_FOUND, {"error": f"no route {self.path}"})
            return
        serving = self.server.state.serving
        if serving is None:
            self._send(HTTPStatus.SERVICE_UNAVAILABLE, {"error": "no model loaded yet"})
            return
        try:
            request = self._json_body()
            prediction = serving.model.predict(request.get("features"))
        except ModelError as exc:
            self._send(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
            return
        pointer = serving.loaded.pointer
        self._send(
            HTTPStatus.OK,
            {
                "prediction": prediction,
                "model": pointer.model,
                "version": pointer.version,
                "digest": pointer.digest,
            },
        )

    def _json_body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        if not 0 < length <= MAX_BODY_BYTES:
            raise ModelError(f"body: expected 1 to {MAX_BODY_BYTES} bytes of JSON")
        try:
            body = orjson.loads(self.rfile.read(length))
        except orjson.JSONDecodeError as exc:
            raise ModelError("body: not valid JSON") from exc
        if not isinstance(body, dict):
            raise ModelError('body: expected {"features": {...}}')
        return body

    def _send(self, status: HTTPStatus, body: dict[str, Any]) -> None:
        data = orjson.dumps(body)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        """Access logs at debug level, as JSON lines."""
        log.debug("request", client=self.client_address[0], line=format % args)


class ModelHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server that carries the shared ``State``."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], state: State) -> None:
        super().__init__(address, Handler)
        self.state = state


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="model_server", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--root",
        type=Path,
        default=Path(reader.DEFAULT_ROOT),
        help="the pointercache shared volume (default: /pointercache)",
    )
    parser.add_argument(
        "--listen",
        default="0.0.0.0:8080",
        help="host:port to serve on (default: 0.0.0.0:8080)",
    )
    parser.add_argument(
        "--ack-url",
        default=None,
        help="the sidecar's status server (e.g. http://127.0.0.1:8787): acknowledge every load",
    )
    parser.add_argument(
        "--log-level", default="info", choices=("debug", "info", "warning", "error")
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGTERM or SIGINT; return the exit code."""
    args = _parser().parse_args(argv)
    log.configure(level=args.log_level, component="model-server")
    host, _, port = args.listen.rpartition(":")
    state, stop = State(), threading.Event()
    httpd = ModelHTTPServer((host.strip("[]") or "0.0.0.0", int(port)), state)  # noqa: S104
    follower = threading.Thread(
        target=follow, args=(args.root, state, stop, args.ack_url), daemon=True
    )
    follower.start()

    def _shutdown(signum: int, _frame: FrameType | None) -> None:
        log.info("shutting-down", signal=signal.Signals(signum).name)
        stop.set()
        threading.Thread(target=httpd.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, _shutdown)
    signal.signal(signal.SIGINT, _shutdown)
    bound_host, bound_port = httpd.server_address[:2]
    log.info("listening", host=str(bound_host), port=int(bound_port), root=str(args.root))
    with httpd:
        httpd.serve_forever()
    follower.join(timeout=2)
    return 0
