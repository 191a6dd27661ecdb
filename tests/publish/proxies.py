"""A TCP proxy of our own on loopback, in front of a real server, that can break things.

It runs its own event loop in a thread, so synchronous tests can drive subprocesses through it.
Modes (``mode``):

- ``"up"``: forward both ways;
- ``"reset"``: accept and close at once (a registry whose load balancer has no backend);
- ``cut_on``: a bytes marker; a request whose bytes contain it is forwarded, and once the
  server starts answering, both connections are closed without relaying a byte of the answer.
  The server did the work; the client never learns it (``cuts`` counts these; an interim
  ``100 Continue`` is relayed, so the body reaches the server);
- ``strip``: header names whose lines are removed from requests (a store that ignores them).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
from collections.abc import Iterator

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
"""An interim answer (``Expect: 100-continue``): relayed even when the answer is to be lost."""


class Proxy:
    """Loopback TCP proxy to ``127.0.0.1:target_port``; ``port`` is where it listens."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.mode = "up"
        self.cut_on: bytes | None = None
        self.cut_budget = 0
        self.cuts = 0
        self.strip: tuple[str, ...] = ()
        self.requests = 0
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, daemon=True)
        self._server: asyncio.Server | None = None

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", 0)
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    def start(self) -> Proxy:
        """Start listening (returns once ``port`` is set)."""
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        """Stop listening, end every connection (closing both sides), close the loop."""

        async def close() -> None:
            if self._server is not None:
                self._server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.sleep(0)  # let the closed transports finish closing

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def cut(self, marker: bytes, times: int = 1) -> None:
        """Lose the answer of the next ``times`` requests containing ``marker``."""
        self.cut_on, self.cut_budget = marker, times

    def _rewrite(self, data: bytes) -> bytes:
        for name in self.strip:
            data = re.sub(rb"\r\n" + name.encode() + rb":[^\r\n]*", b"", data, flags=re.IGNORECASE)
        return data

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_writer: asyncio.StreamWriter | None = None
        try:
            if self.mode == "reset":
                return
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
            except OSError:
                return
            await self._relay(reader, writer, up_reader, up_writer)
        finally:
            for w in (writer, up_writer):
                if w is not None:
                    with contextlib.suppress(Exception):
                        w.close()

    async def _relay(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
    ) -> None:
        armed = asyncio.Event()

        async def upstream() -> None:
            while data := await reader.read(65536):
                self.requests += data.count(b"HTTP/1.1\r\n")
                if self.cut_on is not None and self.cut_budget > 0 and self.cut_on in data:
                    self.cut_budget -= 1
                    armed.set()
                up_writer.write(self._rewrite(data))
                await up_writer.drain()

        async def downstream() -> None:
            pending = b""
            while data := await up_reader.read(65536):
                if not armed.is_set():
                    writer.write(data)
                    await writer.drain()
                    continue
                pending += data
                while pending.startswith(CONTINUE):  # interim answers: the body is wanted
                    writer.write(CONTINUE)
                    await writer.drain()
                    pending = pending[len(CONTINUE) :]
                if CONTINUE.startswith(pending):  # nothing yet, or half an interim answer
                    continue
                self.cuts += 1
                return

        tasks = [asyncio.ensure_future(upstream()), asyncio.ensure_future(downstream())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


@contextlib.contextmanager
def proxy_to(port: int) -> Iterator[Proxy]:
    """A started ``Proxy`` to ``port``, stopped at the end."""
    proxy = Proxy(port).start()
    try:
        yield proxy
    finally:
        proxy.stop()
