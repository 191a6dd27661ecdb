"""The outbox: a durable, ordered queue of registrations in one SQLite file (WAL mode).

``<dir>/outbox.sqlite3`` holds one row per registration. SQLite does the write-ahead logging:
``journal_mode=WAL`` with ``synchronous=FULL`` makes every committed transaction durable (the
WAL is fsynced at each commit; https://www.sqlite.org/pragma.html#pragma_synchronous), and a
process killed at any point (SIGKILL included) leaves the last committed state on the next open
(https://www.sqlite.org/wal.html). When ``enqueue`` returns, the entry is on disk.

An entry is ``queued`` until a registrar accepts it (``registered``) or the registry proves it
holds a different artifact under that version (``rejected``: never retried). Entries are ordered
by ``seq`` (publish order); the drainer applies those of one (registry, model) in that order.
Publishing the same registration to the same registry again returns the existing entry (the
``fingerprint`` column is unique), so a pipeline step that is re-run queues nothing new.

Every ``sqlite3`` error becomes an ``OutboxError`` naming SQLite's error code (``SQLITE_FULL``
for a full disk, ``SQLITE_READONLY``, ``SQLITE_CORRUPT``...), never its message text.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import hashlib
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from pointercache.base.clock import utcnow
from pointercache.errors import OutboxError
from pointercache.publish.registration import Registration
from pointercache.volume.fsutil import LockBusy, flock_exclusive, fsync_dir

DB_NAME = "outbox.sqlite3"
LOCK_NAME = "drain.lock"
SCHEMA_VERSION = 1
BUSY_TIMEOUT = 30.0
"""Seconds a statement waits for another process's write transaction (SQLite busy timeout)."""
MAX_ERROR_CHARS = 1000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    registry TEXT NOT NULL,
    model TEXT NOT NULL,
    version TEXT NOT NULL,
    key TEXT NOT NULL,
    fingerprint TEXT NOT NULL UNIQUE,
    payload BLOB NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('queued', 'registered', 'rejected')),
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    result TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS entries_queued ON entries (state, registry, model, seq);
"""


class State(enum.StrEnum):
    """Where an entry is in its life."""

    QUEUED = "queued"
    """Durable in the outbox, not yet accepted by the registry."""
    REGISTERED = "registered"
    """The registry holds it (newly, or already from an earlier attempt)."""
    REJECTED = "rejected"
    """The registry holds another artifact under that version; never retried."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One row of the outbox."""

    seq: int
    """Publish order within this outbox (1, 2, ...)."""
    registry: str
    """Registry URI the registration goes to (no credentials: they stay in files)."""
    registration: Registration
    """What is registered."""
    state: State
    """queued, registered or rejected."""
    attempts: int
    """Times a registrar was tried for it."""
    last_error: str | None
    """The last failure (redacted, one line), or None."""
    result: str | None
    """What the registry answered once accepted (e.g. MLflow's version number), or None."""
    created_at: str
    """RFC 3339 UTC time it was queued."""
    updated_at: str
    """RFC 3339 UTC time of the last change."""


def _code(exc: sqlite3.Error) -> str:
    return str(getattr(exc, "sqlite_errorname", "") or type(exc).__name__)


@contextlib.contextmanager
def _translated(what: str) -> Iterator[None]:
    """Turn sqlite3 and OS errors into ``OutboxError`` by their code."""
    try:
        yield
    except sqlite3.Error as exc:
        raise OutboxError(f"{what}: {_code(exc)}") from exc
    except OSError as exc:
        name = errno.errorcode.get(exc.errno or 0, type(exc).__name__)
        raise OutboxError(f"{what}: {name}") from exc


class Outbox:
    """The outbox in ``directory`` (created if missing); one connection, one thread at a time.

    ``max_pages`` caps the database's size in pages (SQLite ``max_page_count``); past it, writes
    fail as on a full disk (``SQLITE_FULL``). Tests use it to fill the outbox without a tmpfs.
    Raises ``OutboxError`` if the directory or the database cannot be created or opened.
    """

    def __init__(self, directory: Path, *, max_pages: int | None = None) -> None:
        self.directory = directory
        self.path = directory / DB_NAME
        where = f"outbox {directory}"
        with _translated(where):
            created = not directory.exists()
            directory.mkdir(parents=True, exist_ok=True)
            if created:
                fsync_dir(directory.parent)
            fresh = not self.path.exists()
            self._db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT, isolation_level=None)
        try:
            with _translated(where):
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=FULL")
                if max_pages is not None:
                    self._db.execute(f"PRAGMA max_page_count={int(max_pages)}")
                self._db.executescript(_SCHEMA)
                self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                if fresh:
                    fsync_dir(directory)
        except BaseException:
            self._db.close()
            raise

    def close(self) -> None:
        """Close the connection (committed entries stay)."""
        self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _write(self, what: str) -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``), rolled back on error."""
        with _translated(f"outbox {self.directory}: {what}"):
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                if self._db.in_transaction:  # SQLite rolls back by itself on SQLITE_FULL
                    with contextlib.suppress(sqlite3.Error):
                        self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def enqueue(self, registry: str, registration: Registration) -> tuple[Entry, bool]:
        """Queue ``registration`` for ``registry`` durably; (entry, True if it is new).

        An identical registration for the same registry returns the existing entry, whatever
        its state. ``OutboxError`` if it cannot be written (then nothing was queued).
        """
        payload = registration.to_json()
        fingerprint = hashlib.sha256(registry.encode() + b"\n" + payload).hexdigest()
        now = utcnow()
        with self._write("enqueue") as db:
            row = db.execute("SELECT seq FROM entries WHERE fingerprint = ?", (fingerprint,))
            found = row.fetchone()
            if found is None:
                cursor = db.execute(
                    "INSERT INTO entries (registry, model, version, key, fingerprint, payload,"
                    " state, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, 'queued', ?, ?)",
                    (
                        registry,
                        registration.model,
                        registration.version,
                        registration.key,
                        fingerprint,
                        payload,
                        now,
                        now,
                    ),
                )
                seq = cursor.lastrowid
            else:
                seq = found[0]
        assert seq is not None
        return self.get(seq), found is None

    _COLUMNS = "seq, registry, payload, state, attempts, last_error, result, created_at, updated_at"

    def _entries(self, where: str, params: tuple[object, ...] = ()) -> list[Entry]:
        with _translated(f"outbox {self.directory}: read"):
            rows = self._db.execute(
                f"SELECT {self._COLUMNS} FROM entries {where} ORDER BY seq",  # noqa: S608
                params,
            ).fetchall()
        return [
            Entry(
                seq=row[0],
                registry=row[1],
                registration=Registration.from_json(row[2]),
                state=State(row[3]),
                attempts=row[4],
                last_error=row[5],
                result=row[6],
                created_at=row[7],
                updated_at=row[8],
            )
            for row in rows
        ]

    def get(self, seq: int) -> Entry:
        """The entry ``seq``; ``OutboxError`` if there is none."""
        found = self._entries("WHERE seq = ?", (seq,))
        if not found:
            raise OutboxError(f"outbox {self.directory}: no entry {seq}")
        return found[0]

    def entries(self) -> list[Entry]:
        """Every entry, in publish order."""
        return self._entries("")

    def queued(self) -> list[Entry]:
        """Queued entries, in publish order."""
        return self._entries("WHERE state = 'queued'")

    def blocking(self, entry: Entry) -> Entry | None:
        """The earliest queued entry of the same registry and model published before ``entry``."""
        for other in self.queued():
            if other.seq >= entry.seq:
                return None
            if (other.registry, other.registration.model) == (
                entry.registry,
                entry.registration.model,
            ):
                return other
        return None

    def counts(self) -> dict[State, int]:
        """How many entries are in each state."""
        with _translated(f"outbox {self.directory}: read"):
            rows = self._db.execute("SELECT state, count(*) FROM entries GROUP BY state")
            found = {State(state): n for state, n in rows.fetchall()}
        return {state: found.get(state, 0) for state in State}

    def _settle(self, seq: int, state: State, error: str | None, result: str | None) -> None:
        with self._write(f"mark entry {seq} {state}") as db:
            db.execute(
                "UPDATE entries SET state = ?, attempts = attempts + 1, last_error = ?,"
                " result = coalesce(?, result), updated_at = ? WHERE seq = ?",
                (state.value, error[:MAX_ERROR_CHARS] if error else None, result, utcnow(), seq),
            )

    def mark_registered(self, seq: int, result: str) -> None:
        """The registry accepted entry ``seq``; ``result`` is what it answered."""
        self._settle(seq, State.REGISTERED, None, result)

    def mark_failed(self, seq: int, error: str) -> None:
        """An attempt at entry ``seq`` failed; it stays queued with ``error`` recorded."""
        self._settle(seq, State.QUEUED, error, None)

    def mark_rejected(self, seq: int, error: str) -> None:
        """The registry holds another artifact under entry ``seq``'s version: stop trying."""
        self._settle(seq, State.REJECTED, error, None)

    def integrity(self) -> str:
        """SQLite's ``PRAGMA integrity_check`` answer (``"ok"`` when the file is sound)."""
        with _translated(f"outbox {self.directory}: integrity check"):
            return str(self._db.execute("PRAGMA integrity_check").fetchone()[0])

    @contextlib.contextmanager
    def drain_lock(self, timeout: float) -> Iterator[bool]:
        """Hold the outbox's drain lock while the block runs; yield False if it stayed busy.

        One drainer at a time applies entries, so two processes never register the same entry
        concurrently (MLflow has no conditional create). The lock is an ``flock``: a killed
        holder releases it.
        """
        try:
            fd = flock_exclusive(self.directory / LOCK_NAME, timeout=timeout)
        except LockBusy:
            yield False
            return
        except OSError as exc:
            name = errno.errorcode.get(exc.errno or 0, type(exc).__name__)
            raise OutboxError(f"outbox {self.directory}: drain lock: {name}") from exc
        try:
            yield True
        finally:
            os.close(fd)
