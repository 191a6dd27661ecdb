"""Reading a Kubernetes watch response as a stream of events (newline-delimited JSON).

``KubeClient.watch_configmaps`` opens the request; ``WatchStream`` parses what arrives, turns an
``ERROR`` event into the ``KubeError`` for its code (410 ``Gone``) and can be stopped from
another thread. It needs no ``kubernetes`` import of its own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, NamedTuple

import orjson

from pointercache.adapters.kube.errors import library_errors, status_error, translate
from pointercache.errors import KubeUnavailable


class WatchEvent(NamedTuple):
    """One event of a watch stream: ADDED, MODIFIED, DELETED or BOOKMARK."""

    type: str
    object: dict[str, Any]
    resource_version: str | None


class WatchStream:
    """An open watch response: iterate for events; ``stop()`` from any thread ends it."""

    def __init__(self, resp: Any, what: str) -> None:
        self._resp = resp
        self._what = what
        self._stopped = False

    def stop(self) -> None:
        """Unblock the reading thread by shutting the socket down (safe from another thread)."""
        self._stopped = True
        with contextlib.suppress(AttributeError, OSError):  # already closed
            self._resp.shutdown()

    def __iter__(self) -> Iterator[WatchEvent]:
        buf = b""
        try:
            for chunk in self._resp.stream(8192, decode_content=True):
                buf += chunk
                while (end := buf.find(b"\n")) >= 0:
                    line, buf = buf[:end], buf[end + 1 :]
                    event = self._event(line)
                    if event is not None:
                        yield event
            event = self._event(buf)
            if event is not None:
                yield event
        except library_errors() as exc:
            if not self._stopped:
                raise translate(exc, self._what) from exc
        finally:
            self._resp.close()
            self._resp.release_conn()

    def _event(self, line: bytes) -> WatchEvent | None:
        if not line.strip():
            return None
        try:
            raw = orjson.loads(line)
            kind, obj = raw["type"], raw["object"]
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise KubeUnavailable(f"{self._what}: malformed watch event") from exc
        if kind == "ERROR":
            code = int(obj.get("code") or 0)
            raise status_error(code, f"{self._what}: {code} {obj.get('reason', '')}")
        rv = (obj.get("metadata") or {}).get("resourceVersion")
        return WatchEvent(str(kind), obj, rv)
