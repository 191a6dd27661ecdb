"""The sidecar against moto's S3 server that dies in the middle of a download."""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path

from pointercache.model.pointer import Pointer
from pointercache.volume.fsutil import atomic_write_bytes
from tests.e2e.conftest import World
from tests.e2e.helpers import MODEL, Sidecar, run_init, wait_until
from tests.servers import MotoServer

BIG = 96 << 20


def staging_has_bytes(root: Path) -> bool:
    """True once a download has started writing under ``root/.staging``."""
    return any(p.is_file() and p.stat().st_size > 0 for p in (root / ".staging").rglob("*"))


def test_s3_dies_mid_download_old_version_stays_and_a_retry_succeeds(
    world: World, cli_env: dict[str, str], private_moto: MotoServer
) -> None:
    """Moto killed while v2 downloads: v1 stays served; once S3 is back, the retry flips."""
    bucket = private_moto.new_bucket("outage")
    client = private_moto.client()
    client.put_object(Bucket=bucket, Key="m/1/w.bin", Body=b"one" * 1000)
    big = os.urandom(1 << 20) * (BIG >> 20)
    client.put_object(Bucket=bucket, Key="m/2/w.bin", Body=big)

    def publish(revision: int, production: str) -> None:
        doc = {
            "schema": 1,
            "model": MODEL,
            "revision": revision,
            "aliases": {"production": production},
            "versions": {v: {"uri": f"s3://{bucket}/m/{v}/"} for v in ("1", "2")},
        }
        atomic_write_bytes(world.manifest, json.dumps(doc).encode())

    publish(1, "1")
    env = cli_env | private_moto.env()
    allow = ["--allow", f"s3://{bucket}"]
    assert run_init(env, *world.init_args(*allow)).returncode == 0
    sidecar = Sidecar(env, [*world.common(), *allow, "--poll-interval", "3600"])
    try:
        publish(2, "2")
        refresh = threading.Thread(
            target=sidecar.get, args=("/refresh",), kwargs={"method": "POST"}
        )
        refresh.start()
        wait_until(lambda: staging_has_bytes(world.root), 60, 0.005)
        private_moto.stop()
        refresh.join(120)
        failed = wait_until(lambda: sidecar.find("flip-failed"), 60)
        assert failed["version"] == "2"
        doc = sidecar.status()
        assert doc["current"]["version"] == "1"
        assert sidecar.get("/readyz")[0] == 200
        assert Pointer.read(world.root / "pointer.json").version == "1"

        private_moto.start()  # a new, empty moto: put the objects back
        client = private_moto.client()
        client.create_bucket(Bucket=bucket)
        client.put_object(Bucket=bucket, Key="m/2/w.bin", Body=big)
        code, body = sidecar.get("/refresh?wait=60", method="POST", timeout=70)  # the outcome
        assert (code, json.loads(body)["outcome"]) == (200, "flipped")
        assert sidecar.status()["current"]["version"] == "2"
    finally:
        sidecar.stop(signal.SIGTERM)
    assert Pointer.read(world.root / "pointer.json").size_bytes == BIG
    assert not list((world.root / ".staging").iterdir())
