"""JSON-lines logging on stderr: short lower-case event names, values as fields.

``log.info("published", version="8", source="lkg-node")`` writes
``{"ts": ..., "level": "info", "event": "published", "version": "8", "source": "lkg-node"}``.
Every string value passes through ``redact_text`` first, so a URI with user info or a presigned
query string never reaches the log.
"""

from __future__ import annotations

import contextlib
import io
import sys
import threading
from collections.abc import Iterator
from typing import Any, TextIO

import orjson

from pointercache.base.clock import utcnow
from pointercache.base.redact import redact_text

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}


class Logger:
    """A tiny structured logger; one instance per process (``log`` below)."""

    def __init__(self, stream: TextIO | None = None, level: str = "info") -> None:
        self._stream = stream
        self._level = LEVELS[level]
        self._lock = threading.Lock()
        self.component = ""

    def configure(
        self,
        *,
        level: str | None = None,
        component: str | None = None,
        stream: TextIO | None = None,
    ) -> None:
        """Set the threshold, the component name added to each line, or the stream."""
        if level is not None:
            self._level = LEVELS[level]
        if component is not None:
            self.component = component
        if stream is not None:
            self._stream = stream

    @contextlib.contextmanager
    def captured(self, level: str = "debug") -> Iterator[io.StringIO]:
        """Send log lines to a buffer while the block runs, then restore what was set before.

        For tests of what gets logged: the previous stream (even "stderr at the time of each
        write") and level come back exactly, so later tests still see their lines.
        """
        saved = (self._stream, self._level)
        buffer = io.StringIO()
        self._stream, self._level = buffer, LEVELS[level]
        try:
            yield buffer
        finally:
            self._stream, self._level = saved

    def _emit(self, level: str, event: str, fields: dict[str, Any]) -> None:
        if LEVELS[level] < self._level:
            return
        record: dict[str, Any] = {"ts": utcnow(), "level": level, "event": event}
        if self.component:
            record["component"] = self.component
        for key, value in fields.items():
            record[key] = _clean(value)
        line = orjson.dumps(record, default=str).decode() + "\n"
        with self._lock:
            stream = self._stream or sys.stderr
            stream.write(line)
            stream.flush()

    def debug(self, event: str, **fields: Any) -> None:
        """Log at debug level."""
        self._emit("debug", event, fields)

    def info(self, event: str, **fields: Any) -> None:
        """Log at info level."""
        self._emit("info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        """Log at warning level."""
        self._emit("warning", event, fields)

    def error(self, event: str, **fields: Any) -> None:
        """Log at error level."""
        self._emit("error", event, fields)


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, BaseException):
        return redact_text(f"{type(value).__name__}: {value}")
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


log = Logger()
