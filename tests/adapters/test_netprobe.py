"""The TCP preflight of HTTP and MLflow registries: what it reports, and that init skips aiohttp.

The preflight only runs while aiohttp is not loaded, and this test process has loaded it, so the
end-to-end cases run ``pointercache init`` in a fresh interpreter and read its ``sys.modules``.
"""

from __future__ import annotations

import asyncio
import errno
import json
import socket
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp import web

from pointercache.adapters import netprobe
from pointercache.adapters.http import Preflight
from pointercache.errors import SourceUnavailable
from pointercache.model.pointer import Pointer
from tests.e2e.helpers import MODEL, make_artifact, run_init, write_manifest
from tests.mlflow_server import MlflowServer
from tests.resolve.test_http_manifest import manifest as rec_manifest
from tests.servers import free_port

INIT_AND_REPORT = """\
import json, runpy, sys
sys.argv = ['pointercache', 'init', *sys.argv[1:]]
code = 0
try:
    runpy.run_module('pointercache_cli', run_name='__main__')
except SystemExit as exc:
    code = exc.code
print(json.dumps({'code': code, 'aiohttp': 'aiohttp' in sys.modules}))
"""
"""Runs ``pointercache init`` with the given flags; prints its exit code and if aiohttp loaded."""


async def init_and_report(
    env: dict[str, str], registry: str, root: Path, lkg: Path, *extra: str, model: str = MODEL
) -> tuple[dict[str, object], str]:
    """Run init in a fresh interpreter (without blocking this loop): (report, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        INIT_AND_REPORT,
        *("--model", model, "--registry", registry, "--root", str(root), "--lkg-dir", str(lkg)),
        *("--termination-log", str(root.parent / f"{root.name}.term"), *extra),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    report: dict[str, object] = json.loads(out.decode().strip().splitlines()[-1])
    return report, err.decode()


@pytest.fixture
def warm_lkg(tmp_path: Path, cli_env: dict[str, str]) -> Path:
    """A node LKG (and cache) for MODEL version 1, written by an init from a file registry."""
    make_artifact(tmp_path, "1")
    manifest = tmp_path / "registry" / f"{MODEL}.json"
    write_manifest(manifest, tmp_path, revision=1, aliases={"production": "1"})
    lkg = tmp_path / "lkg"
    proc = run_init(
        cli_env,
        *("--model", MODEL, "--registry", manifest.as_uri(), "--root", str(tmp_path / "pod0")),
        *("--lkg-dir", str(lkg), "--termination-log", str(tmp_path / "term0")),
    )
    assert proc.returncode == 0, proc.stderr
    return lkg


@pytest.fixture
def full_backlog() -> Iterator[int]:
    """A loopback port whose accept queue is full: a connect to it hangs (SYNs are dropped)."""
    with socket.socket() as listener, socket.socket() as filler:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port: int = listener.getsockname()[1]
        filler.connect(("127.0.0.1", port))  # takes the only slot; nobody accepts it
        yield port


async def test_probe_of_a_listening_port_connects_and_returns() -> None:
    """A probe of a listening port returns, after the server saw one connection."""
    seen: list[bool] = []

    async def count(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(True)
        writer.close()

    server = await asyncio.start_server(count, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        await netprobe.probe("127.0.0.1", port, 5)
        async with asyncio.timeout(5):
            while not seen:
                await asyncio.sleep(0.01)
    finally:
        server.close()
        await server.wait_closed()
    assert seen == [True]


async def test_probe_of_a_closed_port_is_refused() -> None:
    """Nothing listening is SourceUnavailable that says the connection was refused."""
    with pytest.raises(SourceUnavailable, match=r"^reg: connection refused$"):
        await netprobe.probe("127.0.0.1", free_port(), 5, what="reg")


async def test_probe_of_a_server_that_never_accepts_times_out(full_backlog: int) -> None:
    """A server that does not accept within the probe's time is SourceUnavailable: timed out."""
    async with asyncio.timeout(10):  # a safety net far above the probe's own limit
        with pytest.raises(SourceUnavailable, match=r"127\.0\.0\.1:\d+: timed out"):
            await netprobe.probe("127.0.0.1", full_backlog, 0.2)


def test_reasons_are_chosen_by_type_and_errno() -> None:
    """DNS failures, refusals and other errnos get short reasons that quote no message text."""
    assert netprobe.reason(socket.gaierror(socket.EAI_NONAME, "secret")) == (
        "host name does not resolve"
    )
    assert netprobe.reason(ConnectionRefusedError(errno.ECONNREFUSED, "x")) == (
        "connection refused"
    )
    unreachable = OSError(errno.EHOSTUNREACH, "secret")
    assert netprobe.reason(unreachable) == "cannot connect (EHOSTUNREACH)"
    assert netprobe.reason(TimeoutError()) == "timed out"


def test_target_of_urls() -> None:
    """The probe aims at the URL's host and port (scheme default); unparsable ports skip it."""
    assert netprobe.target("http://u:p@reg.example:8080/m.json") == ("reg.example", 8080)
    assert netprobe.target("https://reg.example/m.json") == ("reg.example", 443)
    assert netprobe.target("http://[::1]/x") == ("::1", 80)
    assert netprobe.target("http://reg.example:99999/m.json") is None
    assert netprobe.target("ftp://reg.example/m.json") is None


async def test_preflight_stands_aside_once_aiohttp_is_loaded() -> None:
    """With aiohttp loaded (as in the sidecar), the preflight of a dead registry probes nothing."""
    assert "aiohttp" in sys.modules  # this module imports aiohttp.web
    assert not netprobe.needed()
    preflight = Preflight(f"http://127.0.0.1:{free_port()}/m.json", 5, "reg")
    await preflight.check()


def test_blocking_probe_reports_like_the_async_one(full_backlog: int) -> None:
    """The constructor's blocking probe: refused and never-accepting ports, a listening one."""
    with pytest.raises(SourceUnavailable, match=r"^reg: connection refused$"):
        netprobe.probe_blocking("127.0.0.1", free_port(), 5, what="reg")
    with pytest.raises(SourceUnavailable, match=r"^reg: timed out$"):
        netprobe.probe_blocking("127.0.0.1", full_backlog, 0.2, what="reg")
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        netprobe.probe_blocking("127.0.0.1", listener.getsockname()[1], 5)
        listener.settimeout(5)
        listener.accept()[0].close()  # the probe's connection really arrived


@pytest.mark.parametrize("scheme", ["http", "mlflow+http"])
async def test_unreachable_registry_fails_over_to_the_lkg_without_aiohttp(
    scheme: str, warm_lkg: Path, tmp_path: Path, cli_env: dict[str, str]
) -> None:
    """Init against a refusing HTTP or MLflow registry serves the node LKG without aiohttp."""
    path = "/m.json" if scheme == "http" else ""
    registry = f"{scheme}://127.0.0.1:{free_port()}{path}"
    report, stderr = await init_and_report(cli_env, registry, tmp_path / "pod", warm_lkg)
    assert report == {"code": 0, "aiohttp": False}, stderr
    assert "connection refused" in stderr
    pointer = Pointer.read(tmp_path / "pod" / "pointer.json")
    assert (pointer.version, pointer.source) == ("1", "lkg-node")


@pytest.fixture
async def http_registry(tmp_path: Path) -> AsyncIterator[str]:
    """A live HTTP registry on loopback serving a manifest for MODEL version 1."""
    make_artifact(tmp_path, "1")
    manifest = tmp_path / "served.json"
    write_manifest(manifest, tmp_path, revision=1, aliases={"production": "1"})
    app = web.Application()

    async def serve(_: web.Request) -> web.Response:
        return web.Response(body=manifest.read_bytes())

    app.router.add_get("/m.json", serve)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/m.json"
    finally:
        await runner.cleanup()


async def test_reachable_http_registry_is_used(
    http_registry: str, tmp_path: Path, cli_env: dict[str, str]
) -> None:
    """When the probe gets through, init loads aiohttp and publishes the registry's answer."""
    report, stderr = await init_and_report(
        cli_env, http_registry, tmp_path / "pod", tmp_path / "lkg"
    )
    assert report == {"code": 0, "aiohttp": True}, stderr
    pointer = Pointer.read(tmp_path / "pod" / "pointer.json")
    assert (pointer.version, pointer.source) == ("1", "registry")


async def test_reachable_mlflow_registry_is_used(
    mlflow: MlflowServer, tmp_path: Path, cli_env: dict[str, str]
) -> None:
    """Against a live MLflow server the probe gets through and init publishes its answer."""
    model = mlflow.new_model("probe")
    version = mlflow.create_version(model, {"weights.bin": b"w" * 100})
    mlflow.set_alias(model, "production", version)
    report, stderr = await init_and_report(
        cli_env,
        mlflow.registry_uri,
        tmp_path / "pod",
        tmp_path / "lkg",
        *("--allow", f"mlflow-artifacts+{mlflow.url}", "--registry-timeout", "3"),
        model=model,
    )
    assert report == {"code": 0, "aiohttp": True}, stderr
    pointer = Pointer.read(tmp_path / "pod" / "pointer.json")
    assert (pointer.version, pointer.source) == (version, "registry")


LATER_RESOLUTIONS = """\
import asyncio, functools, http.server, json, sys, threading
from pointercache.model.candidate import Selector
from pointercache.errors import SourceUnavailable
from pointercache.resolve.sources import SourceOptions
from pointercache.resolve.sources.http import HttpManifestSource

port, directory = int(sys.argv[1]), sys.argv[2]
report = []

async def main():
    source = HttpManifestSource(f"http://127.0.0.1:{port}/rec.json", SourceOptions(timeout=5))
    selector = Selector.parse("alias:production")
    for attempt in range(3):
        if attempt == 2:  # the registry comes up after two refused resolutions
            handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=directory)
            server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
            threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            report.append((await source.resolve("rec", selector)).version)
        except SourceUnavailable as exc:
            report.append(str(exc))
        report.append("aiohttp" in sys.modules)
    await source.aclose()
    server.shutdown()

asyncio.run(main())
print(json.dumps(report))
"""
"""Resolves three times; the registry starts listening before the third resolution."""


async def test_later_resolutions_probe_until_the_registry_comes_up(tmp_path: Path) -> None:
    """Refused at construction and again later without aiohttp; once up, it is used."""
    (tmp_path / "rec.json").write_bytes(rec_manifest(1, "8"))
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        LATER_RESOLUTIONS,
        str(port),
        str(tmp_path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    refused = f"http://127.0.0.1:{port}/rec.json: connection refused"
    assert json.loads(out) == [refused, False, refused, False, "8", True]
