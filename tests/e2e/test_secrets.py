"""No credential or presigned query string reaches a log line, /status or pointer.json.

Init and sidecar run with AWS credentials (secret key and session token) against moto's S3
server; one version is served through a presigned HTTP URL and one through a presigned URL
that fails. Every byte they expose is searched for the secrets.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import boto3
from botocore.config import Config

from tests.e2e.conftest import World
from tests.e2e.helpers import MODEL, Sidecar, run_init, wait_until
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
    exposed += [p.read_text() for p in world.root.rglob("pointer.json") if p.is_file()]
    exposed += [p.read_text() for p in world.lkg.glob("*.json")]
    text = "\n".join(exposed)
    assert sidecar.find("flipped") is not None
    for needle in NEEDLES:
        assert needle not in text, f"{needle} leaked"
    assert f"{moto_server.endpoint_url}/{bucket}/models/2/model.bin" in text  # redacted, not gone
