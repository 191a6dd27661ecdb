"""Blocking calls without letting them hold the event loop, the executor or the exit.

Reads of untrusted or remote files can block for as long as the kernel lets them (a hung network
filesystem, a FIFO opened the blocking way). Two shapes, both bounded from the loop's side:

- ``abandon_after(seconds, fn)``: run ``fn`` on the default executor and stop waiting after
  ``seconds`` (``TimeoutError``); the thread is left to finish on its own;
- ``in_daemon_thread(fn)``: run ``fn`` on a daemon thread of its own, for work that may never
  return (a thread the interpreter does not wait for at exit, and that takes no executor slot).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


async def abandon_after(seconds: float | None, fn: Callable[..., T], *args: Any) -> T:
    """Run blocking ``fn(*args)`` in a thread and wait at most ``seconds`` (``TimeoutError``;
    None: no bound).

    A thread that outlives the wait is left to finish on its own (a read on a hung disk).
    """
    loop = asyncio.get_running_loop()
    future = loop.run_in_executor(None, fn, *args)
    limit = None if seconds is None else max(seconds, 0.0)
    try:
        done, _ = await asyncio.wait({future}, timeout=limit)
    except BaseException:  # cancelled: the thread goes on alone
        future.add_done_callback(_retrieve)
        raise
    if not done:
        future.add_done_callback(_retrieve)
        raise TimeoutError(f"no answer within {seconds:g}s")
    return future.result()


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()  # retrieved, so asyncio does not warn about it


def in_daemon_thread(fn: Callable[[], T]) -> asyncio.Future[T]:
    """Run ``fn`` on a new daemon thread; a future of its result on the running loop.

    Unlike an executor's worker, a daemon thread that never returns is not waited for when the
    process exits.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def work() -> None:
        result: T | None = None
        error: BaseException | None = None
        try:
            result = fn()
        except BaseException as exc:  # handed to the loop, raised there
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=work, name="pointercache-status-read", daemon=True).start()
    return future
