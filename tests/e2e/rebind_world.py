"""The servers of the DNS rebinding tests, run inside the test's network namespace.

``python -m tests.e2e.rebind_world CONFIG EVENTS`` starts, all in the namespace:

- a DNS server (dnslib) on 127.0.0.1:53 whose answer for a name *changes*: the n-th A query for
  a name gets ``names[name][min(n, len - 1)]``; AAAA queries get no answer;
- the "good" HTTP server on ``GOOD`` (10.213.0.1:8080): the artifact, a redirect to
  ``hop.test``, a manifest, a manifest redirect to ``manifest-hop.test``, and the few MLflow
  REST and artifact-proxy answers the MLflow cases ask for;
- witnesses on every forbidden address of ``WITNESSES`` (loopback, the metadata address): each
  records a ``connect`` event the moment a connection is accepted, then answers any request with
  ``EVIL`` bytes (what an attacker's server on that address would serve).

Every DNS query and every witness connection is appended to EVENTS as a JSON line. The process
writes ``{"event": "ready"}`` once everything listens, and runs until it is killed.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from pathlib import Path
from typing import Any

from aiohttp import web
from dnslib import QTYPE, RCODE, RR, A, DNSRecord
from dnslib.server import BaseResolver, DNSHandler, DNSServer

GOOD = "10.213.0.1"
WITNESSES = ("127.0.0.1", "169.254.169.254")
PORT = 8080
GOOD_BYTES = b"the model the registry meant\n" * 64
EVIL_BYTES = b"bytes served from a forbidden address\n" * 64
ARTIFACTS_API = "/api/2.0/mlflow-artifacts/artifacts"


class Events:
    """Appends JSON lines to the events file (from several threads)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.Lock()

    def add(self, **event: Any) -> None:
        """Record one event."""
        with self.lock, self.path.open("a") as out:
            out.write(json.dumps(event) + "\n")


class ChangingResolver(BaseResolver):  # type: ignore[misc]
    """Answers the n-th A query for a name with the n-th address of its list (the last one
    from then on); names it does not know are NXDOMAIN."""

    def __init__(self, names: dict[str, list[str]], events: Events) -> None:
        self.names = names
        self.asked: dict[str, int] = {}
        self.events = events
        self.lock = threading.Lock()

    def resolve(self, request: DNSRecord, handler: DNSHandler) -> DNSRecord:
        """One answer, recorded."""
        reply = request.reply()
        name = str(request.q.qname).rstrip(".")
        qtype = QTYPE[request.q.qtype]
        answers = self.names.get(name)
        if answers is None:
            reply.header.rcode = RCODE.NXDOMAIN
            return reply
        if request.q.qtype == QTYPE.A:
            with self.lock:
                count = self.asked.get(name, 0)
                self.asked[name] = count + 1
            address = answers[min(count, len(answers) - 1)]
            reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=A(address), ttl=0))
            self.events.add(event="dns", name=name, type=qtype, answer=address)
        return reply  # AAAA and anything else: no answer (no IPv6 in this namespace)


def good_app(config: dict[str, Any]) -> web.Application:
    """The server the registry meant: artifact, redirect, manifest, MLflow answers."""
    artifact = f"http://{GOOD}:{PORT}/art/model.bin"

    async def model(request: web.Request) -> web.Response:
        return web.Response(body=GOOD_BYTES)

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound(f"http://hop.test:{PORT}/art/model.bin")

    async def manifest_redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound(f"http://manifest-hop.test:{PORT}/m.json")

    async def manifest(request: web.Request) -> web.Response:
        doc = {
            "schema": 1,
            "model": config["model"],
            "revision": 1,
            "aliases": {"production": "1"},
            "versions": {"1": {"uri": artifact}},
        }
        return web.json_response(doc)

    async def listing(request: web.Request) -> web.Response:
        return web.json_response({})  # an empty listing: the path is a single file

    async def mlflow(request: web.Request) -> web.Response:
        name = config["model"]
        version = {"name": name, "version": "1", "status": "READY", "source": artifact}
        answers: dict[str, Any] = {
            "registered-models/alias": {"model_version": version},
            "registered-models/get": {"registered_model": {"name": name}},
            "model-versions/get-download-uri": {"artifact_uri": artifact},
        }
        found = answers.get(request.match_info["endpoint"])
        if found is None:
            return web.json_response({"error_code": "ENDPOINT_NOT_FOUND"}, status=404)
        return web.json_response(found)

    app = web.Application()
    app.router.add_get("/art/model.bin", model)
    app.router.add_get("/art/redirect", redirect)
    app.router.add_get("/m.json", manifest)
    app.router.add_get("/m-redirect", manifest_redirect)
    app.router.add_get(ARTIFACTS_API, listing)
    app.router.add_get(f"{ARTIFACTS_API}/model.bin", model)
    app.router.add_get("/api/2.0/mlflow/{endpoint:.+}", mlflow)
    return app


async def witness(address: str, events: Events) -> asyncio.Server:
    """Records every connection to ``address:PORT``, then serves EVIL_BYTES to any request."""

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        events.add(event="connect", address=address, port=PORT)
        try:
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            events.add(event="request", address=address, line=request.split(b"\r\n")[0].decode())
            head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(EVIL_BYTES)}\r\n\r\n".encode()
            writer.write(head + EVIL_BYTES)
            await writer.drain()
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(accept, address, PORT)


async def main(config_path: Path, events_path: Path) -> None:
    """Start everything, say ready, wait forever."""
    config = json.loads(config_path.read_text())
    events = Events(events_path)
    dns = DNSServer(ChangingResolver(config["names"], events), address="127.0.0.1", port=53)
    dns.start_thread()
    runner = web.AppRunner(good_app(config))
    await runner.setup()
    await web.TCPSite(runner, GOOD, PORT).start()
    servers = [await witness(address, events) for address in WITNESSES]
    events.add(event="ready")
    try:
        await asyncio.Event().wait()
    finally:
        for server in servers:
            server.close()
        await runner.cleanup()
        dns.stop()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), Path(sys.argv[2])))
