"""MLflow source and fetcher against small loopback servers speaking the MLflow REST protocol.

These cover what a healthy real server will not do on demand: error codes with misleading
messages, oversized answers, redirects, hostile artifact listings, and checks on the credentials
actually sent.
"""

from __future__ import annotations

import base64
import io
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from pointercache.adapters.http import Credentials
from pointercache.adapters.mlflow import read_signature
from pointercache.adapters.retry import Backoff
from pointercache.errors import (
    FetchUnavailable,
    ForbiddenURI,
    InvalidManifest,
    NotFound,
    SourceError,
    SourceUnavailable,
)
from pointercache.model.candidate import Selector
from pointercache.resolve.sources import SourceOptions
from pointercache.resolve.sources.mlflow import MlflowSource, artifact_credentials
from pointercache.stage.fetchers import FetchOptions
from pointercache.stage.fetchers.mlflow import MlflowArtifactFetcher

PROD = Selector.parse("alias:production")
TOKEN = "sekret-token-8d1f"
MV = {"name": "rec", "version": "8", "status": "READY", "source": "s3://models/rec/8"}


class FakeRegistry:
    """Records requests; answers registry calls from ``self.answers`` (path → (status, body))."""

    def __init__(self) -> None:
        self.auth: list[str | None] = []
        self.paths: list[str] = []
        self.answers: dict[str, tuple[int, Any]] = {
            "/api/2.0/mlflow/registered-models/alias": (200, {"model_version": MV}),
            "/api/2.0/mlflow/registered-models/get": (200, {"registered_model": {"name": "rec"}}),
            "/api/2.0/mlflow/model-versions/get-download-uri": (
                200,
                {"artifact_uri": "s3://models/rec/8"},
            ),
        }

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.auth.append(request.headers.get("Authorization"))
        self.paths.append(request.path)
        status, body = self.answers.get(request.path, (404, {"error_code": "ENDPOINT_NOT_FOUND"}))
        if isinstance(body, web.StreamResponse):
            return body
        raw = body if isinstance(body, bytes) else orjson.dumps(body)
        return web.Response(status=status, body=raw, content_type="application/json")


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[web.Application], Any]]:
    """Start aiohttp apps on loopback ports; returns an async starter giving host:port."""
    runners: list[web.AppRunner] = []

    async def start(app: web.Application) -> str:
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        return f"127.0.0.1:{port}"

    yield start
    for runner in runners:
        await runner.cleanup()


async def registry(serve: Callable[[web.Application], Any], fake: FakeRegistry) -> str:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fake.handle)
    netloc: str = await serve(app)
    return netloc


async def test_bearer_token_is_sent_reread_and_never_logged(
    serve: Callable[[web.Application], Any], tmp_path: Path, captured_log: io.StringIO
) -> None:
    """The token file is read on each use, sent as a bearer token, and kept out of logs."""
    fake = FakeRegistry()
    netloc = await registry(serve, fake)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    source = MlflowSource(
        f"mlflow+http://{netloc}",
        SourceOptions(timeout=5, credentials=Credentials(token_file=token_file)),
    )
    try:
        assert (await source.resolve("rec", PROD)).version == "8"
        token_file.write_text("rotated-token-2\n")
        fake.answers["/api/2.0/mlflow/registered-models/alias"] = (
            403,
            {"error_code": "PERMISSION_DENIED"},
        )
        with pytest.raises(SourceError) as excinfo:
            await source.resolve("rec", PROD)
    finally:
        await source.aclose()
    assert fake.auth[0] == f"Bearer {TOKEN}"
    assert set(fake.auth[:3]) == {f"Bearer {TOKEN}"}
    assert fake.auth[-1] == "Bearer rotated-token-2"
    assert TOKEN not in str(excinfo.value)
    assert "rotated" not in str(excinfo.value)
    assert TOKEN not in captured_log.getvalue()


async def test_basic_auth_file(serve: Callable[[web.Application], Any], tmp_path: Path) -> None:
    """A user:password file is sent as HTTP basic auth."""
    fake = FakeRegistry()
    netloc = await registry(serve, fake)
    (tmp_path / "basic").write_text("reader:pa55word\n")
    options = SourceOptions(timeout=5, credentials=Credentials(basic_auth_file=tmp_path / "basic"))
    source = MlflowSource(f"mlflow+http://{netloc}", options)
    try:
        await source.resolve("rec", PROD)
    finally:
        await source.aclose()
    assert fake.auth[0] == "Basic " + base64.b64encode(b"reader:pa55word").decode()


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (404, {"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "server overloaded"}, NotFound),
        (400, {"error_code": "INVALID_PARAMETER_VALUE", "message": "try again later"}, NotFound),
        (
            500,
            {"error_code": "TEMPORARILY_UNAVAILABLE", "message": "does not exist"},
            SourceUnavailable,
        ),
        (429, {"error_code": "REQUEST_LIMIT_EXCEEDED"}, SourceUnavailable),
        (502, b"<html>bad gateway</html>", SourceUnavailable),
        (401, {"error_code": "UNAUTHENTICATED", "message": "not found"}, SourceError),
    ],
)
async def test_errors_are_mapped_by_code_and_status_not_message(
    serve: Callable[[web.Application], Any], status: int, body: Any, error: type[Exception]
) -> None:
    """The error class follows MLflow's error_code (then HTTP status), never the message."""
    fake = FakeRegistry()
    fake.answers["/api/2.0/mlflow/registered-models/alias"] = (status, body)
    netloc = await registry(serve, fake)
    source = MlflowSource(f"mlflow+http://{netloc}", SourceOptions(timeout=5))
    try:
        with pytest.raises(error) as excinfo:
            await source.resolve("rec", PROD)
    finally:
        await source.aclose()
    assert type(excinfo.value) is error


async def test_oversized_answer_is_invalid(serve: Callable[[web.Application], Any]) -> None:
    """An answer over max_manifest_bytes is rejected as InvalidManifest."""
    fake = FakeRegistry()
    padding = {"model_version": {**MV, "description": "x" * 5000}}
    fake.answers["/api/2.0/mlflow/registered-models/alias"] = (200, padding)
    netloc = await registry(serve, fake)
    source = MlflowSource(
        f"mlflow+http://{netloc}", SourceOptions(timeout=5, max_manifest_bytes=1000)
    )
    try:
        with pytest.raises(InvalidManifest, match="limit"):
            await source.resolve("rec", PROD)
    finally:
        await source.aclose()


async def test_redirects_are_not_followed(
    serve: Callable[[web.Application], Any], tmp_path: Path
) -> None:
    """A redirect from the registry is refused: the token never travels to another host."""
    elsewhere = FakeRegistry()
    other = await registry(serve, elsewhere)
    fake = FakeRegistry()
    moved = web.HTTPFound(f"http://{other}/api/2.0/mlflow/registered-models/alias")
    fake.answers["/api/2.0/mlflow/registered-models/alias"] = (302, moved)
    netloc = await registry(serve, fake)
    (tmp_path / "token").write_text(TOKEN)
    options = SourceOptions(timeout=5, credentials=Credentials(token_file=tmp_path / "token"))
    source = MlflowSource(f"mlflow+http://{netloc}", options)
    try:
        with pytest.raises(SourceError):
            await source.resolve("rec", PROD)
    finally:
        await source.aclose()
    assert elsewhere.paths == []


async def test_model_mismatch_is_invalid(serve: Callable[[web.Application], Any]) -> None:
    """An answer about another model than the one asked for is InvalidManifest."""
    fake = FakeRegistry()
    fake.answers["/api/2.0/mlflow/registered-models/alias"] = (
        200,
        {"model_version": {**MV, "name": "other"}},
    )
    netloc = await registry(serve, fake)
    source = MlflowSource(f"mlflow+http://{netloc}", SourceOptions(timeout=5))
    try:
        with pytest.raises(InvalidManifest, match="other"):
            await source.resolve("rec", PROD)
    finally:
        await source.aclose()


async def test_server_local_artifact_location_is_refused(
    serve: Callable[[web.Application], Any],
) -> None:
    """A download URI that is a path on the server's disk cannot be fetched: InvalidManifest."""
    fake = FakeRegistry()
    fake.answers["/api/2.0/mlflow/model-versions/get-download-uri"] = (
        200,
        {"artifact_uri": "/mlruns/0/abc/artifacts/model"},
    )
    netloc = await registry(serve, fake)
    source = MlflowSource(f"mlflow+http://{netloc}", SourceOptions(timeout=5))
    try:
        with pytest.raises(InvalidManifest, match="local to the server"):
            await source.resolve("rec", PROD)
    finally:
        await source.aclose()


def proxy_app(listings: dict[str, list[dict[str, Any]]], seen: list[str | None]) -> web.Application:
    """A fake artifact proxy: ``listings`` maps a listed path to its entries; files say 'x'."""

    async def listing(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        files = listings.get(request.query.get("path", ""), [])
        return web.json_response({"files": files} if files else {})

    async def download(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        return web.Response(body=b"x")

    app = web.Application()
    app.router.add_get("/api/2.0/mlflow-artifacts/artifacts", listing)
    app.router.add_get("/api/2.0/mlflow-artifacts/artifacts/{path:.*}", download)
    return app


@pytest.mark.parametrize(
    "evil", ["../escape", "a/../../escape", "/etc/passwd", "a//b", ".", "a\\..\\b"]
)
async def test_listing_with_traversal_is_forbidden(
    serve: Callable[[web.Application], Any], tmp_path: Path, evil: str
) -> None:
    """A listed name that could leave the destination is ForbiddenURI; nothing escapes."""
    listings = {"run/model": [{"path": "ok.bin", "is_dir": False}, {"path": evil, "is_dir": False}]}
    netloc = await serve(proxy_app(listings, []))
    fetcher = MlflowArtifactFetcher(FetchOptions())
    try:
        with pytest.raises(ForbiddenURI):
            await fetcher.fetch(
                f"mlflow-artifacts+http://{netloc}/run/model", tmp_path / "dest" / "m"
            )
    finally:
        await fetcher.aclose()
    assert not (tmp_path / "escape").exists()
    assert not (tmp_path / "dest" / "escape").exists()


async def test_fetcher_rejects_traversal_in_the_uri(tmp_path: Path) -> None:
    """An artifact URI with '..' segments (plain or percent-encoded) is ForbiddenURI."""
    fetcher = MlflowArtifactFetcher(FetchOptions())
    try:
        for uri in ("mlflow-artifacts+http://h:1/a/../b", "mlflow-artifacts+http://h:1/a/%2e%2e/b"):
            with pytest.raises(ForbiddenURI):
                await fetcher.fetch(uri, tmp_path / "m")
    finally:
        await fetcher.aclose()


async def test_fetcher_sends_credentials_only_to_the_registry_host(
    serve: Callable[[web.Application], Any], tmp_path: Path
) -> None:
    """mlflow_auth credentials go to the netloc they are configured for, and nowhere else."""
    (tmp_path / "token").write_text(TOKEN)
    seen: list[str | None] = []
    netloc = await serve(proxy_app({"r/m": [{"path": "w.bin", "is_dir": False}]}, seen))
    registries = [f"mlflow+http://{netloc}"]
    creds = artifact_credentials(
        registries, SourceOptions(credentials=Credentials(token_file=tmp_path / "token"))
    )
    for auth, dest in ((creds, "a"), ({"other:1": creds[netloc]}, "b")):
        fetcher = MlflowArtifactFetcher(FetchOptions(mlflow_auth=auth))
        try:
            result = await fetcher.fetch(f"mlflow-artifacts+http://{netloc}/r/m", tmp_path / dest)
        finally:
            await fetcher.aclose()
        assert result.is_dir
        assert (tmp_path / dest / "w.bin").read_bytes() == b"x"
    assert seen[:2] == [f"Bearer {TOKEN}"] * 2
    assert seen[2:] == [None, None]


LONG = [{"type": "double", "name": f"feature_{i}_it's", "required": True} for i in range(6)]


def test_read_signature_folded_and_quoted() -> None:
    """A long single-quoted value folded over lines (as PyYAML writes it) reads back exactly."""
    import json

    import yaml

    doc = {"signature": {"inputs": json.dumps(LONG), "outputs": None, "params": None}}
    text = yaml.safe_dump({"artifact_path": "model", **doc}, default_flow_style=False)
    assert "\n    " in text  # the value really is folded
    parsed = read_signature(text.encode())
    assert parsed == {"inputs": LONG, "outputs": None, "params": None}


@pytest.mark.parametrize(
    "text",
    [
        "artifact_path: model\nflavors:\n  python_function: {}\n",
        'signature:\n  inputs: |\n    [{"type": "double"}]\n',
        "signature:\n  inputs: 'not json'\n",
        "signature: {inputs: '[]'}\n",
    ],
)
def test_read_signature_absent_or_unsupported_is_none(text: str) -> None:
    """No signature, or YAML outside the subset MLflow writes, reads as None (not a guess)."""
    assert read_signature(text.encode()) is None


def test_read_signature_double_quoted() -> None:
    """A double-quoted value with escapes is decoded."""
    text = 'signature:\n  inputs: "[{\\"type\\": \\"long\\", \\"name\\": \\"n\\"}]"\n'
    assert read_signature(text.encode()) == {"inputs": [{"type": "long", "name": "n"}]}


async def test_fetcher_retries_a_transient_failure(
    serve: Callable[[web.Application], Any], tmp_path: Path
) -> None:
    """A file whose first download answers 503 is fetched again; a persistent 503 gives up."""
    calls: dict[str, int] = {}

    async def listing(request: web.Request) -> web.Response:
        return web.json_response({"files": [{"path": "flaky.bin", "is_dir": False}]})

    async def download(request: web.Request) -> web.Response:
        calls[request.path] = calls.get(request.path, 0) + 1
        if "broken" in request.path or calls[request.path] == 1:
            return web.Response(status=503)
        return web.Response(body=b"finally")

    app = web.Application()
    app.router.add_get("/api/2.0/mlflow-artifacts/artifacts", listing)
    app.router.add_get("/api/2.0/mlflow-artifacts/artifacts/{path:.*}", download)
    netloc = await serve(app)
    fetcher = MlflowArtifactFetcher(
        FetchOptions(backoff=Backoff(attempts=2, initial=0.01, maximum=0.1))
    )
    try:
        await fetcher.fetch(f"mlflow-artifacts+http://{netloc}/ok", tmp_path / "a")
        with pytest.raises(FetchUnavailable):
            await fetcher.fetch(f"mlflow-artifacts+http://{netloc}/broken", tmp_path / "b")
    finally:
        await fetcher.aclose()
    assert (tmp_path / "a" / "flaky.bin").read_bytes() == b"finally"
    assert calls["/api/2.0/mlflow-artifacts/artifacts/ok/flaky.bin"] == 2
    assert calls["/api/2.0/mlflow-artifacts/artifacts/broken/flaky.bin"] == 2
    assert not (tmp_path / "b" / "flaky.bin").exists()
