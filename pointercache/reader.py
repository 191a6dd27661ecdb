"""Read the published model from the shared volume (for model-serving containers).

``current()`` resolves ``<root>/current`` once and reads ``<dir>/pointer.json`` and
``<dir>/model`` from that one directory, so the pointer always describes the files it returns,
even while the sidecar flips to a new version. ``wait()`` blocks until a model is published;
``watch()`` yields every newly published version. The store keeps the previous versions for a
while (``--keep-versions``), so a model loaded from ``path`` stays readable during a flip.

``watch()`` listens to the root directory with watchfiles but never trusts the event types:
on any event, and at least every ``poll`` seconds without one, it re-reads ``current`` and
compares the resolved directory with the last one it yielded.

``acknowledge()`` closes the loop: once the model container has loaded a ``Model``, it tells the
sidecar (``POST /loaded``), so ``/status``, the pod's annotations, ``pointercache fleet`` and
``pointercache promote --wait loaded`` report what is really served. It uses the standard
library only (this module is imported by model containers and must stay light).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from pointercache.errors import AckUnavailable, ConfigError, InvalidAck, LoadError, NotStaged
from pointercache.model.loaded import Ack, Loaded
from pointercache.model.pointer import Pointer

if TYPE_CHECKING:
    from collections.abc import Iterator

DEFAULT_ROOT = "/pointercache"
DEFAULT_SIDECAR = "http://127.0.0.1:8787"
"""The sidecar's status server as the model container sees it (same pod: loopback)."""
MAX_ANSWER_BYTES = 64 << 10
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


Model = LoadedModel
"""One published version as seen by a reader (``LoadedModel`` is its older name)."""


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


def acknowledge(
    model: LoadedModel | Ack,
    *,
    url: str = DEFAULT_SIDECAR,
    token_file: str | Path | None = None,
    timeout: float = 5.0,
) -> Loaded:
    """Tell the sidecar at ``url`` that ``model`` is loaded; return what it recorded.

    Sends ``POST <url>/loaded`` with ``{"model", "version", "digest"}`` of ``model.pointer`` (or
    the ``Ack`` as given), with the bearer token of ``token_file`` when given (needed only from
    outside the pod's loopback). One attempt, bounded by ``timeout`` seconds; proxies from the
    environment and redirects are not followed. Raises ``NotStaged`` (409: that version is not
    on the volume, with the sidecar's reason), ``InvalidAck`` (400), ``AckUnavailable`` (no
    answer, timeout, 5xx: worth a retry), ``LoadError`` (403 and anything else), and
    ``ConfigError`` for a URL that is not http(s).
    """
    import urllib.error  # here, not at the top: model containers import this module for
    import urllib.request  # current()/watch() and should not pay for an HTTP client (and ssl)

    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"sidecar URL {url!r}: expected http:// or https://")
    if isinstance(model, LoadedModel):
        pointer = model.pointer
        model = Ack(version=pointer.version, digest=pointer.digest, model=pointer.model)
    body = model.to_json()
    headers = {"Content-Type": "application/json"}
    if token_file is not None:
        headers["Authorization"] = f"Bearer {Path(token_file).read_text().strip()}"
    request = urllib.request.Request(  # noqa: S310 - the scheme is checked above
        url.rstrip("/") + "/loaded", data=body, headers=headers, method="POST"
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _no_redirect())
    try:
        with opener.open(request, timeout=timeout) as response:
            answer = response.read(MAX_ANSWER_BYTES)
    except urllib.error.HTTPError as exc:
        with exc:
            raise _refusal(exc.code, exc.read(MAX_ANSWER_BYTES)) from None
    except (OSError, TimeoutError) as exc:
        raise AckUnavailable(f"sidecar at {url}: {type(exc).__name__}: {exc}") from exc
    return _recorded(answer)


def _no_redirect() -> Any:
    import urllib.request

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *_args: object, **_kw: object) -> None:
            return None  # a redirect is answered as the error it is

    return NoRedirect()


def _refusal(status: int, body: bytes) -> LoadError:
    try:
        reason = str(orjson.loads(body).get("error"))
    except (orjson.JSONDecodeError, AttributeError):
        reason = body[:200].decode("utf-8", "replace")
    message = f"sidecar refused the acknowledgement (HTTP {status}): {reason}"
    if status == 409:  # noqa: PLR2004
        return NotStaged(message)
    if status == 400:  # noqa: PLR2004
        return InvalidAck(message)
    if status >= 500:  # noqa: PLR2004
        return AckUnavailable(message)
    return LoadError(message)


def _recorded(answer: bytes) -> Loaded:
    try:
        mark = orjson.loads(answer)["loaded"]
        return Loaded.parse(orjson.dumps(mark))
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise LoadError("sidecar answered the acknowledgement with an unexpected body") from exc
