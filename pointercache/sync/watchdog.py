"""The init container's hard deadline: a thread outside the event loop that ends the process.

The asyncio path ends each step at its share of ``--deadline`` (``sync.budget``), but that path
only runs when the event loop gets control back. A thread stuck in a blocking system call (a read
on a hung network filesystem, an ``open`` that waits), a C extension that holds the loop, or a
thread pool that the interpreter joins at exit can keep the process alive after the deadline.
``Watchdog`` is a daemon thread that does not depend on any of them: when its time comes it calls
``on_expiry`` (which writes the one-line termination log) and ends the process with
``os._exit(1)``.

Once the one shot has a result, ``settle(code)`` re-arms it for a short grace: if the process has
not exited by then (a worker thread the interpreter waits for at exit), it exits with ``code``
without a second message. ``run_detached`` and ``exit_within`` give the sidecar the same clean
exit after SIGTERM. Python threads get the interpreter lock at least every
``sys.getswitchinterval()`` seconds, so the watchdog fires even while the loop is busy in
pure-Python CPU work.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

EXIT_GRACE = 1.0
"""Seconds after ``settle`` in which the process must have exited on its own."""


class Watchdog:
    """Ends the process ``seconds`` from now unless settled first (see the module docstring)."""

    def __init__(self, seconds: float, on_expiry: Callable[[], None]) -> None:
        self._on_expiry = on_expiry
        self._ends = time.monotonic() + seconds
        self._code: int | None = None
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="pointercache-watchdog", daemon=True)

    def start(self) -> Watchdog:
        """Start the timer thread; return self."""
        self._thread.start()
        return self

    def settle(self, code: int, within: float = EXIT_GRACE) -> None:
        """The result is known: exit with ``code`` if the process still runs ``within`` seconds
        from now (nothing is reported again)."""
        with self._cond:
            self._code = code
            self._ends = time.monotonic() + within
            self._cond.notify_all()

    def _run(self) -> None:
        with self._cond:
            while (left := self._ends - time.monotonic()) > 0:
                self._cond.wait(left)
            code = self._code
        if code is None:
            code = 1
            with contextlib.suppress(BaseException):  # nothing may stop the exit
                self._on_expiry()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # closed or broken: exit anyway
                continue
        os._exit(code)


def run_detached(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` without waiting for worker threads at the end.

    A thread stuck in a read (a hung disk, a registry that trickles into a library's blocking
    read) is left behind instead of holding the process; tasks that ignore their cancellation are
    given a quarter of a second. Pair it with ``exit_within``: the interpreter itself still
    joins executor threads at exit.
    """
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(main)
    finally:
        try:
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            if tasks:
                loop.run_until_complete(asyncio.wait(tasks, timeout=0.25))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()  # shuts the default executor down without waiting


def exit_within(code: int, seconds: float = EXIT_GRACE) -> None:
    """Make sure the process ends with ``code`` within ``seconds`` from now, whatever thread the
    interpreter would wait for at exit (nothing is reported)."""
    Watchdog(seconds, lambda: None).start().settle(code, within=seconds)
