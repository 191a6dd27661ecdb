"""Time stamps as pointercache writes and reads them: RFC 3339, UTC, milliseconds.

Wall-clock stamps are for people (``resolved_at``, log lines, ``/status``). Nothing that decides
which version to serve compares wall-clock stamps taken on different machines; durations inside
one process use ``time.monotonic``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


def utcnow() -> str:
    """Return the current UTC time as an RFC 3339 string with milliseconds (``...Z``)."""
    return utc_after(0.0)


def utc_after(seconds: float) -> str:
    """The UTC time ``seconds`` from now, written like ``utcnow`` (for "retry at" in /status)."""
    when = datetime.now(UTC) + timedelta(seconds=seconds)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(text: str | None) -> datetime | None:
    """Read a timestamp written by ``utcnow`` (or any ISO 8601 one); None if absent or bad.

    A timestamp without a zone is taken as UTC, so ages can always be computed.
    """
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def age_seconds(text: str | None) -> float | None:
    """Seconds from the timestamp ``text`` until now (3 decimals); None if absent or bad."""
    then = parse_time(text)
    if then is None:
        return None
    return round((datetime.now(UTC) - then).total_seconds(), 3)
