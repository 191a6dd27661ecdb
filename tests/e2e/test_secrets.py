"""No credential or secret-bearing URI part reaches any byte pointercache writes or serves.

The first test runs init and sidecar with AWS credentials (secret key and session token) against
moto's S3 server; one version is served through a presigned HTTP URL and one through a presigned
URL that fails. The second puts a distinct secret in every place a URI can carry one — the
registry URI, artifact query strings and path parameters, user info, a redirect's Location, the
pinned URI — and runs both roles against an HTTP registry and kmock (cluster LKG ConfigMap, pod
annotations, Events), plus an init that fails (the termination log). Every byte they expose is
searched for the secrets.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import signal
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import boto3
import pytest
from aiohttp import web
from botocore.config import Config

from tests.e2e.conftest import World
from tests.e2e.helpers import MODEL, Sidecar, run_init, wait_until
from tests.e2e.test_kube_sidecar import Cluster, cluster, requests_to  # noqa: F401
from tests.servers import MotoServer

SECRET = "SuperSecretAccessKey0123456789abcdefXYZ"
TOKEN = "SessionTokenThatMustNeverLeak0123456789"
NEEDLES = (
    SECRET,
    TOKEN,
    "X-Amz-Signature",
    "X-Amz-Credential",
    "X-Amz-Security-Token",
    "Authorization",
)


def upload(moto: MotoServer, bucket: str, prefix: str, files: dict[str, bytes]) -> None:
    """Put ``files`` under ``prefix`` in ``bucket``."""
    client = moto.client()
    for name, body in files.items():
        client.put_object(Bucket=bucket, Key=f"{prefix}{name}", Body=body)


def test_secrets_never_leak(
    world: World, cli_env: dict[str, str], moto_server: MotoServer, tmp_path: Path
) -> None:
    """With credentials and presigned URLs in play, logs, /status and pointers stay clean."""
    bucket = moto_server.new_bucket("leak")
    upload(moto_server, bucket, "models/1/", {"w.bin": b"one" * 100})
    upload(moto_server, bucket, "models/2/model.bin", {"": b"two" * 100})
    signer = boto3.session.Session(
        aws_access_key_id="AKIATESTING",
        aws_secret_access_key=SECRET,
        aws_session_token=TOKEN,
        region_name="us-east-1",
    ).client("s3", endpoint_url=moto_server.endpoint_url, config=Config(signature_version="s3v4"))
    presigned = signer.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "models/2/model.bin"}, ExpiresIn=600
    )
    broken = signer.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "models/404/nothing.bin"}, ExpiresIn=600
    )
    assert "X-Amz-Signature" in presigned

    def manifest(revision: int, production: str) -> None:
        doc = {
            "schema": 1,
            "model": MODEL,
            "revision": revision,
            "aliases": {"production": production},
            "versions": {
                "1": {"uri": f"s3://{bucket}/models/1/"},
                "2": {"uri": presigned},
                "3": {"uri": broken},
            },
        }
        signer.put_object(Bucket=bucket, Key="manifests/m.json", Body=json.dumps(doc).encode())

    manifest(1, "1")
    env = (
        cli_env | moto_server.env() | {"AWS_SECRET_ACCESS_KEY": SECRET, "AWS_SESSION_TOKEN": TOKEN}
    )
    common = [
        "--model",
        MODEL,
        "--registry",
        f"s3://{bucket}/manifests/m.json",
        "--root",
        str(world.root),
        "--lkg-dir",
        str(world.lkg),
        "--allow",
        f"s3://{bucket}",
        "--allow",
        moto_server.endpoint_url,
        "--registry-timeout",
        "5",
        "--log-level",
        "debug",
    ]
    init = run_init(env, *common, "--termination-log", str(world.term))
    assert init.returncode == 0, init.stderr
    exposed = [init.stderr]
    sidecar = Sidecar(env, [*common, "--poll-interval", "0.5"])
    try:
        manifest(2, "2")
        wait_until(lambda: sidecar.status()["current"]["version"] == "2", 30)
        manifest(3, "3")
        wait_until(
            lambda: (
                sidecar.status()["registry"]["last_error"] is None
                and "3" in json.dumps(sidecar.status()["history"][:3])
            ),
            30,
        )
        wait_until(lambda: sidecar.find("flip-failed"), 30)
        exposed += [sidecar.get("/status")[1].decode(), sidecar.get("/metrics")[1].decode()]
    finally:
        sidecar.stop(signal.SIGTERM)
    exposed += sidecar.lines
    # every byte of every file written on the pod volumes and the node directories
    for top in (world.root, world.lkg, world.base / "pod-failed", world.base / "empty-node"):
        written = [p for p in top.rglob("*") if p.is_file() and not p.is_symlink()]
        exposed += [p.read_bytes().decode("utf-8", "replace") for p in written]
        exposed += [str(p) for p in written]
    assert any(p.name == "pointer.json" for p in world.root.rglob("*"))
    assert list(world.lkg.glob("*.json")), "no node LKG was written"
    text = "\n".join(exposed)
    assert sidecar.find("flipped") is not None
    for needle in NEEDLES:
        assert needle not in text, f"{needle} leaked"
    assert f"{moto_server.endpoint_url}/{bucket}/models/2/model.bin" in text  # redacted, not gone


URI_SECRETS = {
    "registry-query": "RegistryJwt0xA1",
    "registry-userinfo": "RegistryPass0xA2",
    "path-parameter": "JSessionId0xA3",
    "query-pwd": "QueryPwd0xA4",
    "query-pass": "QueryPass0xA5",
    "redirect-from": "QueryCode0xA6",
    "redirect-session": "QuerySession0xA7",
    "location-hmac": "LocationHmac0xA8",
    "location-signature": "LocationSig0xA9",
    "failing-jwt": "FailingJwt0xB1",
    "artifact-userinfo": "ArtifactPass0xB2",
    "pinned-session": "PinnedSession0xB3",
    "pinned-failing": "PinnedFailing0xB6",
    "fragment": "Fragment0xB4",
    "token-file": "RegistryBearer0xB5",
    "hook-query": "HookToken0xB7",
}
"""One distinct secret per place a URI (or a credential file) can carry one."""
BODY = b"model weights\n" * 100


@pytest.fixture
async def origin(world: World) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """A loopback HTTP registry and artifact store: (base URL, mutable manifest document)."""
    doc: dict[str, Any] = {}

    async def manifest(request: web.Request) -> web.Response:
        return web.json_response(doc)

    async def artifact(request: web.Request) -> web.Response:
        return web.Response(body=BODY)

    async def reload(request: web.Request) -> web.Response:
        return web.Response(status=503)  # a failing reload: its error is shown and persisted

    async def redirect(request: web.Request) -> web.Response:
        location = (
            f"/art/2/model.bin?hmac={URI_SECRETS['location-hmac']}"
            f"&X-Amz-Signature={URI_SECRETS['location-signature']}"
        )
        raise web.HTTPFound(location)

    app = web.Application()
    app.router.add_get("/m.json", manifest)
    app.router.add_get("/redirect", redirect)
    app.router.add_post("/reload", reload)
    app.router.add_get("/art/{tail:.*}", artifact)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", doc
    finally:
        await runner.cleanup()


def secret_manifest(base: str, digest: str, production: str, revision: int) -> dict[str, Any]:
    """A manifest whose every version URI carries secrets where URIs can."""
    sec = URI_SECRETS
    versions = {
        "1": f"{base}/art/1/model.bin;jsessionid={sec['path-parameter']}"
        f"?pwd={sec['query-pwd']}&pass={sec['query-pass']}&versionId=1",
        "2": f"{base}/redirect?code={sec['redirect-from']}&session={sec['redirect-session']}",
        "3": f"{base}/missing/model.bin?jwt={sec['failing-jwt']}",
        "4": base.replace("http://", f"http://user:{sec['artifact-userinfo']}@") + "/art/x.bin",
        "5": f"{base}/art/5/model.bin#{sec['fragment']}",
    }
    return {
        "schema": 1,
        "model": MODEL,
        "revision": revision,
        "aliases": {"production": production},
        "versions": {
            v: {"uri": uri, **({"digest": digest} if v in ("1", "2") else {})}
            for v, uri in versions.items()
        },
    }


def plain(value: Any) -> Any:
    """kmock's mapping and sequence views as plain JSON values."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def event_reasons(cluster: Cluster) -> set[str]:  # noqa: F811 - the fixture's type
    """The reasons of the Events the sidecar created."""
    return {r.data["reason"] for r in requests_to(cluster.handler, "POST", "/events")}


def failed_flip(sidecar: Sidecar, version: str) -> bool:
    """True once the sidecar's history shows a failed flip to ``version``."""
    history = sidecar.status()["history"]
    return any(e.get("version") == version and e["event"] == "flip-failed" for e in history)


async def test_secrets_in_every_uri_never_leak(
    world: World,
    cli_env: dict[str, str],
    origin: tuple[str, dict[str, Any]],
    cluster: Cluster,  # noqa: F811 - the fixture imported above
) -> None:
    """Both roles, secrets in every URI part and credential file: logs, /status, /metrics,
    pointer.json, node and cluster LKG, annotations, Events and the termination log stay clean."""
    base, doc = origin
    digest = "sha256:" + hashlib.sha256(BODY).hexdigest()
    doc.update(secret_manifest(base, digest, "3", 1))  # a 404: init falls back to pinned
    token = world.base / "registry-token"
    token.write_text(URI_SECRETS["token-file"])
    registry = base.replace("http://", f"http://user:{URI_SECRETS['registry-userinfo']}@")
    registry += f"/m.json?jwt={URI_SECRETS['registry-query']}"

    def flags(root: Path, lkg: Path, pinned: str) -> list[str]:
        return [
            *("--model", MODEL, "--registry", registry, "--root", str(root)),
            *("--lkg-dir", str(lkg), "--allow", base, "--registry-timeout", "5"),
            *("--registry-token-file", str(token), "--log-level", "debug"),
            *("--pinned-version", "p", "--pinned-uri", pinned),
        ]

    pinned = f"{base}/art/p/model.bin?session={URI_SECRETS['pinned-session']}"
    common = flags(world.root, world.lkg, pinned)
    env = cli_env | {"KUBECONFIG": str(cluster.kubeconfig)}
    init = await asyncio.to_thread(run_init, env, *common, "--termination-log", str(world.term))
    assert init.returncode == 0, init.stderr
    exposed = [init.stderr]
    sidecar = await asyncio.to_thread(
        Sidecar,
        env,
        [
            *common,
            *("--poll-interval", "0.3", "--lkg-configmap", "ml/pointercache-lkg"),
            *("--report-to-pod", "--pod-name", "server-0", "--pod-namespace", "ml"),
            *("--on-flip-url", f"{base}/reload?token={URI_SECRETS['hook-query']}&v={{version}}"),
            *("--on-flip-timeout", "1"),
        ],
    )
    try:
        for revision, version in enumerate(("1", "2", "3", "4", "5"), start=2):
            doc.update(secret_manifest(base, digest, version, revision))
            if version in ("1", "2"):
                await asyncio.to_thread(
                    wait_until, lambda v=version: sidecar.status()["current"]["version"] == v, 30
                )
            else:
                await asyncio.to_thread(wait_until, lambda v=version: failed_flip(sidecar, v), 30)
        await asyncio.to_thread(
            wait_until,
            lambda: {"RegistryFallback", "ModelFlipped", "ReloadFailed"} <= event_reasons(cluster),
            15,
        )
        exposed += [sidecar.get("/status")[1].decode(), sidecar.get("/metrics")[1].decode()]
    finally:
        await asyncio.to_thread(sidecar.stop, signal.SIGTERM)
    exposed += sidecar.lines
    # an init that fails: its termination log names every step it tried
    doc.update(secret_manifest(base, digest, "3", 99))
    broken = f"{base}/missing/p.bin?session={URI_SECRETS['pinned-failing']}"
    failing = flags(world.base / "pod-failed", world.base / "empty-node", broken)
    failed = await asyncio.to_thread(run_init, env, *failing, "--termination-log", str(world.term))
    assert failed.returncode == 1
    exposed += [failed.stderr, world.term.read_text()]
    # every byte of every file written on the pod volumes and the node directories
    for top in (world.root, world.lkg, world.base / "pod-failed", world.base / "empty-node"):
        written = [p for p in top.rglob("*") if p.is_file() and not p.is_symlink()]
        exposed += [p.read_bytes().decode("utf-8", "replace") for p in written]
        exposed += [str(p) for p in written]
    assert any(p.name == "pointer.json" for p in world.root.rglob("*"))
    assert list(world.lkg.glob("*.json")), "no node LKG was written"
    lkg_configmap = json.dumps(cluster.configmaps.objects.get(("ml", "pointercache-lkg")))
    exposed += [lkg_configmap]
    exposed += [json.dumps(plain(cluster.handler.objects["v1/pods", "ml", "server-0"]))]
    exposed += [json.dumps(plain([r.data for r in cluster.handler if r.data is not None]))]
    text = "\n".join(exposed)
    for place, secret in URI_SECRETS.items():
        assert secret not in text, f"the secret in the {place} leaked"
    for needle in ("jsessionid", "X-Amz-Signature", "Authorization", "Bearer"):
        assert needle not in text, f"{needle} leaked"
    # redacted, not gone: what is kept still says where things came from
    host = base.removeprefix("http://")
    assert f"{host}/art/1/model.bin;<redacted>?versionId=1&<redacted>" in text
    assert f"***@{host}/m.json?<redacted>" in text
    assert f"{host}/missing/p.bin?<redacted>" in world.term.read_text()
    assert f"{host}/redirect?<redacted>" in lkg_configmap
    assert "pointercache.dev/version" in text
    assert f"{host}/reload?<redacted>" in text
