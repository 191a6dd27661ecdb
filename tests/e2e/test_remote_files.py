"""A remote registry cannot make pointercache publish the pod's own files.

An HTTP registry (remote) answering ``file:///proc/self/environ`` used to be staged, published
as the model and copied into the node cache. With the default empty allowlist a file:// artifact
is accepted only from a local (file://) registry or the pinned version, or under an --allow
file:// prefix.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from pointercache.model.pointer import Pointer
from tests.e2e.helpers import MODEL, run_init


@pytest.fixture
async def http_registry() -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """A loopback HTTP registry serving the manifest document it yields (mutable)."""
    doc: dict[str, Any] = {}

    async def serve(_: web.Request) -> web.Response:
        return web.json_response(doc)

    app = web.Application()
    app.router.add_get("/m.json", serve)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/m.json", doc
    finally:
        await runner.cleanup()


def naming(uri: str) -> dict[str, Any]:
    """A manifest whose production version is ``uri`` (no digest, as a hostile one would)."""
    return {
        "schema": 1,
        "model": MODEL,
        "revision": 1,
        "aliases": {"production": "1"},
        "versions": {"1": {"uri": uri}},
    }


@pytest.mark.parametrize("uri", ["file:///proc/self/environ", "file:///etc/shadow"])
async def test_remote_registry_cannot_publish_a_pod_file(
    http_registry: tuple[str, dict[str, Any]], cli_env: dict[str, str], tmp_path: Path, uri: str
) -> None:
    """Nothing is staged, published or cached; the termination log says why."""
    registry, doc = http_registry
    doc.update(naming(uri))
    term = tmp_path / "term"
    proc = await asyncio.to_thread(
        run_init,
        cli_env,
        *("--model", MODEL, "--registry", registry, "--root", str(tmp_path / "pod")),
        *("--lkg-dir", str(tmp_path / "node"), "--termination-log", str(term)),
        *("--registry-timeout", "5"),
    )
    assert proc.returncode == 1
    assert "a file:// artifact named by a remote registry" in term.read_text()
    assert not (tmp_path / "pod" / "pointer.json").exists()
    assert not list((tmp_path / "node").rglob("cas/sha256/*"))


async def test_named_file_prefix_admits_a_remote_registry_file(
    http_registry: tuple[str, dict[str, Any]], cli_env: dict[str, str], tmp_path: Path
) -> None:
    """The operator's --allow file:// prefix is the explicit opt-in for that directory."""
    shared = tmp_path / "shared-models"
    shared.mkdir()
    (shared / "model.bin").write_bytes(b"weights" * 10)
    registry, doc = http_registry
    doc.update(naming((shared / "model.bin").as_uri()))
    proc = await asyncio.to_thread(
        run_init,
        cli_env,
        *("--model", MODEL, "--registry", registry, "--root", str(tmp_path / "pod")),
        *("--termination-log", str(tmp_path / "term"), "--registry-timeout", "5"),
        *("--allow", shared.as_uri()),
    )
    assert proc.returncode == 0, proc.stderr
    pointer = Pointer.read(tmp_path / "pod" / "pointer.json")
    assert (pointer.source, json.loads(pointer.to_json())["uri"]) == (
        "registry",
        (shared / "model.bin").as_uri(),
    )
