"""A real sidecar learns what the model container loaded: POST /loaded, the reader, the CLI."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from pointercache import reader
from pointercache.errors import AckUnavailable, NotStaged
from tests.e2e.conftest import World
from tests.e2e.helpers import Sidecar, cli, run_init, wait_until
from tests.helpers import free_port

SLOW_POLL = ["--poll-interval", "3600"]
UNKNOWN = "sha256:" + "ab" * 32


def post(sidecar: Sidecar, body: bytes, host: str = "127.0.0.1", token: str | None = None):
    """POST ``body`` to /loaded of ``sidecar`` through ``host``: (status, decoded JSON)."""
    port = sidecar.url.rsplit(":", 1)[1]
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(
        f"http://{host}:{port}/loaded", data=body, method="POST", headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())


def ack_body(world: World) -> bytes:
    """The acknowledgement of what the volume publishes now."""
    model = reader.current(world.root)
    assert model is not None
    return json.dumps({"version": model.pointer.version, "digest": model.pointer.digest}).encode()


@pytest.fixture
def sidecar(world: World, cli_env: dict[str, str]) -> Iterator[Sidecar]:
    """Init has published v1; a sidecar whose /readyz waits for the model container's load."""
    assert run_init(cli_env, *world.init_args()).returncode == 0
    started = Sidecar(cli_env, [*world.common(), *SLOW_POLL, "--ready-when", "loaded"])
    yield started
    started.stop(signal.SIGKILL)


def test_readiness_waits_for_the_load_and_startup_does_not(sidecar: Sidecar, world: World) -> None:
    """Before any load /readyz is 503 (and /status not ready) and /startupz 200; an ack from
    loopback makes both 200."""
    assert sidecar.get("/startupz")[0] == 200
    code, body = sidecar.get("/readyz")
    assert code == 503 and b"not loaded" in body
    assert sidecar.status()["ready"] is False  # what `pointercache status` exits on
    status, answer = post(sidecar, ack_body(world))
    assert status == 200 and answer["loaded"]["version"] == "1" and answer["loaded"]["via"] == "ack"
    assert sidecar.get("/readyz")[0] == 200
    doc = sidecar.status()
    assert doc["ready"] is True
    assert doc["loaded"]["version"] == "1" and doc["loaded"]["current"] is True
    metrics = sidecar.get("/metrics")[1].decode()
    assert "pointercache_loaded_info{" in metrics and 'via="ack"' in metrics


def test_an_ack_for_a_version_not_staged_is_409_with_the_reason(
    sidecar: Sidecar, world: World
) -> None:
    """Unknown digest → 409 naming the staged versions; nothing is recorded, /readyz stays 503."""
    body = json.dumps({"version": "1", "digest": UNKNOWN}).encode()
    status, answer = post(sidecar, body)
    assert status == 409
    assert "not staged on the volume" in answer["error"] and "staged: 1 (" in answer["error"]
    assert sidecar.status()["loaded"] is None
    assert sidecar.get("/readyz")[0] == 503


MALFORMED = [
    b"",
    b"{",
    b'{"version": "1"}',
    b'{"version": "1", "digest": "x"}',
    b"{" + b" " * 10_000 + b"}",
]


def test_a_malformed_ack_is_400(sidecar: Sidecar) -> None:
    """A body that is not an acknowledgement (or is too large) is 400 with the reason."""
    for body in MALFORMED:
        status, answer = post(sidecar, body)
        assert status == 400 and answer["error"], body[:40]
    assert sidecar.status()["loaded"] is None


def test_the_load_survives_a_sidecar_restart(
    sidecar: Sidecar, world: World, cli_env: dict[str, str]
) -> None:
    """A restarted sidecar (the native sidecar restarts in place) is ready at once, not stuck."""
    assert post(sidecar, ack_body(world))[0] == 200
    assert sidecar.stop(signal.SIGTERM) == 0
    again = Sidecar(cli_env, [*world.common(), *SLOW_POLL, "--ready-when", "loaded"])
    try:
        assert again.get("/readyz")[0] == 200
        assert again.status()["loaded"]["version"] == "1"
    finally:
        again.stop(signal.SIGKILL)


def test_the_reader_library_acknowledges_and_reports_refusals(
    sidecar: Sidecar, world: World
) -> None:
    """reader.acknowledge records the model; a version not staged raises NotStaged; no sidecar
    is AckUnavailable."""
    model = reader.current(world.root)
    assert model is not None
    mark = reader.acknowledge(model, url=sidecar.url)
    assert (mark.version, mark.digest) == ("1", model.pointer.digest)
    from pointercache.model.loaded import Ack

    with pytest.raises(NotStaged, match="not staged on the volume"):
        reader.acknowledge(Ack("2", UNKNOWN), url=sidecar.url)
    with pytest.raises(AckUnavailable):
        reader.acknowledge(model, url=f"http://127.0.0.1:{free_port()}", timeout=2)


def test_the_cli_acknowledges_the_current_version(
    sidecar: Sidecar, world: World, cli_env: dict[str, str]
) -> None:
    """`pointercache loaded --url --root` exits 0 and prints what was recorded; refusals exit 1,
    bad arguments 2; `pointercache status` shows the load."""
    args = ["--url", sidecar.url, "--root", str(world.root)]
    done = subprocess.run(
        cli("loaded", *args), env=cli_env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("loaded 1 sha256:") and done.stdout.strip().endswith("(ack)")
    refused = subprocess.run(
        cli("loaded", *args, "--version", "7", "--digest", UNKNOWN),
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 1 and "not staged on the volume" in refused.stderr
    half = subprocess.run(
        cli("loaded", *args, "--version", "7"),
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert half.returncode == 2 and "go together" in half.stderr
    status = subprocess.run(
        cli("status", "--url", sidecar.url),
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "loaded      1 via ack" in status.stdout, status.stdout


def outside_address() -> str:
    """A non-loopback address of this machine (the source of the default route)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("198.51.100.1", 9))  # TEST-NET-2: no packet is sent for UDP connect
        except OSError as exc:
            pytest.fail(f"this machine has no non-loopback IPv4 route: {exc}")
        address: str = probe.getsockname()[0]
    assert not address.startswith("127."), address
    return address


def test_an_ack_from_outside_the_pod_needs_the_admin_token(
    world: World, cli_env: dict[str, str], tmp_path: Path
) -> None:
    """From a non-loopback address, POST /loaded is 403 without the token and 200 with it;
    loopback needs none."""
    assert run_init(cli_env, *world.init_args()).returncode == 0
    token = tmp_path / "token"
    token.write_text("s3cret-token\n")
    listen = ["--listen", f"0.0.0.0:{free_port()}", "--admin-token-file", str(token)]
    sidecar = Sidecar(cli_env, [*world.common(), *SLOW_POLL, *listen])
    try:
        outside = outside_address()
        assert post(sidecar, ack_body(world), host=outside)[0] == 403
        assert post(sidecar, ack_body(world), host=outside, token="nope")[0] == 403
        assert post(sidecar, ack_body(world), host=outside, token="s3cret-token")[0] == 200
        assert post(sidecar, ack_body(world))[0] == 200
        assert not any("s3cret-token" in line for line in sidecar.lines)
    finally:
        sidecar.stop(signal.SIGKILL)


def test_without_an_admin_token_outside_acks_are_refused(
    world: World, cli_env: dict[str, str]
) -> None:
    """With no token file, only loopback (the pod's own containers) may acknowledge."""
    assert run_init(cli_env, *world.init_args()).returncode == 0
    sidecar = Sidecar(cli_env, [*world.common(), *SLOW_POLL, "--listen", f"0.0.0.0:{free_port()}"])
    try:
        assert post(sidecar, ack_body(world), host=outside_address())[0] == 403
        wait_until(lambda: sidecar.status()["loaded"] is None)
    finally:
        sidecar.stop(signal.SIGKILL)
