"""JSON-lines logging on stderr, through the standard library's ``logging``.

``log.info("published", version="8", source="lkg-node")`` writes one line::

    {"ts": ..., "level": "info", "event": "published", "version": "8", "source": "lkg-node"}

Short lower-case event names, values as fields. ``configure`` also puts the same formatter on
the root logger, so a warning from botocore, aiohttp or the kubernetes client comes out as a
JSON line too (``{"event": "library-log", "logger": "botocore...", "message": ...}``). Every
string value passes through ``redact_text`` first, so a URI with user info or a presigned query
string never reaches the log, whoever logged it.
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
from collections.abc import Iterator
from typing import Any, TextIO

import orjson

from pointercache.base.clock import utcnow
from pointercache.base.redact import redact_text

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR}  # fmt: skip
_NAMES = {value: key for key, value in LEVELS.items()}
_FIELDS = "pointercache_fields"
"""The ``LogRecord`` attribute that carries an event's fields."""
LIBRARY_LEVEL = logging.WARNING
"""Threshold for other libraries' loggers (botocore, aiohttp, kubernetes, urllib3)."""


class JsonFormatter(logging.Formatter):
    """Formats a ``LogRecord`` as one redacted JSON object (no trailing newline)."""

    def __init__(self, component: str = "") -> None:
        super().__init__()
        self.component = component

    def format(self, record: logging.LogRecord) -> str:
        """Our events keep their name and fields; other loggers' records become ``library-log``."""
        level = _NAMES.get(record.levelno, record.levelname.lower())
        fields: dict[str, Any] | None = getattr(record, _FIELDS, None)
        out: dict[str, Any] = {"ts": utcnow(), "level": level}
        if fields is not None:
            out["event"] = record.msg
        else:
            out["event"] = "library-log"
            out["logger"] = record.name
            out["message"] = record.getMessage()
            if record.exc_info and record.exc_info[1] is not None:
                out["error"] = record.exc_info[1]
        if self.component:
            out["component"] = self.component
        out.update(fields or {})
        return orjson.dumps({k: _clean(v) for k, v in out.items()}, default=str).decode()


class _StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to the stream set by ``captured``/``configure``, else to ``sys.stderr`` *at the
    time of each write* (tests and embedding programs swap ``sys.stderr``)."""

    def __init__(self) -> None:
        super().__init__()
        self.override: TextIO | None = None

    @property
    def stream(self) -> TextIO:
        return self.override or sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:  # StreamHandler.__init__ assigns it
        return


class Logger:
    """The structured face of the ``pointercache`` logger; one instance per process (``log``)."""

    def __init__(self, name: str = "pointercache") -> None:
        self._logger = logging.getLogger(name)
        self._logger.propagate = False
        self._handler = _StderrHandler()
        self._handler.setFormatter(JsonFormatter())
        self._logger.addHandler(self._handler)
        self._logger.setLevel(logging.INFO)

    @property
    def component(self) -> str:
        """The component name added to each line (``init``, ``sidecar``...)."""
        formatter = self._handler.formatter
        return formatter.component if isinstance(formatter, JsonFormatter) else ""

    def configure(
        self,
        *,
        level: str | None = None,
        component: str | None = None,
        stream: TextIO | None = None,
    ) -> None:
        """Set our threshold, the component name, or the stream; route library logs as JSON.

        Other loggers' records at ``LIBRARY_LEVEL`` and above reach the same stream through a
        handler on the root logger.
        """
        if level is not None:
            self._logger.setLevel(LEVELS[level])
        if component is not None:
            self._handler.setFormatter(JsonFormatter(component))
        if stream is not None:
            self._handler.override = stream
        root = logging.getLogger()
        root.handlers = [h for h in root.handlers if not isinstance(h, _LibraryHandler)]
        root.addHandler(_LibraryHandler(self._handler))
        root.setLevel(LIBRARY_LEVEL)

    @contextlib.contextmanager
    def captured(self, level: str = "debug") -> Iterator[io.StringIO]:
        """Send our log lines to a buffer while the block runs, then restore what was set.

        For tests of what gets logged: the previous stream (even "stderr at the time of each
        write") and level come back exactly, so later tests still see their lines.
        """
        saved = (self._handler.override, self._logger.level)
        buffer = io.StringIO()
        self._handler.override = buffer
        self._logger.setLevel(LEVELS[level])
        try:
            yield buffer
        finally:
            self._handler.override, level_no = saved
            self._logger.setLevel(level_no)

    def _emit(self, level: int, event: str, fields: dict[str, Any]) -> None:
        if self._logger.isEnabledFor(level):
            self._logger.log(level, event, extra={_FIELDS: fields})

    def debug(self, event: str, **fields: Any) -> None:
        """Log at debug level."""
        self._emit(logging.DEBUG, event, fields)

    def info(self, event: str, **fields: Any) -> None:
        """Log at info level."""
        self._emit(logging.INFO, event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        """Log at warning level."""
        self._emit(logging.WARNING, event, fields)

    def error(self, event: str, **fields: Any) -> None:
        """Log at error level."""
        self._emit(logging.ERROR, event, fields)


class _LibraryHandler(logging.Handler):
    """On the root logger: other libraries' records, formatted and written like ours."""

    def __init__(self, target: _StderrHandler) -> None:
        super().__init__()
        self._target = target

    def emit(self, record: logging.LogRecord) -> None:
        self._target.handle(record)


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
