"""DNS rebinding: the address that was checked is the address connected to, for every client.

Each case runs the real ``pointercache init`` inside a network namespace this module creates
(``ip netns add``; root needed, as in CI). Its ``/etc/resolv.conf`` (``/etc/netns/<ns>/``) points
at a real DNS server (dnslib, ``tests.e2e.rebind_world``) whose answer for a name changes from
one query to the next: first the "good" server 10.213.0.1, then 127.0.0.1 or the metadata
address 169.254.169.254. Listeners on those forbidden addresses record every connection they
accept (the server-side witness) and would serve their own bytes as the model. Nothing here is a
mock: the resolver is glibc's, the client is aiohttp's, the witness is a socket.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pointercache.model.pointer import Pointer
from tests.conftest import REPO
from tests.e2e.helpers import MODEL, cli, wait_until
from tests.e2e.rebind_world import EVIL_BYTES, GOOD, GOOD_BYTES, PORT

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("netns")]

NAMES = {
    "rebind.test": [GOOD, "127.0.0.1"],  # the second answer is loopback
    "meta.test": [GOOD, "169.254.169.254"],  # the second answer is the metadata address
    "evil.test": ["127.0.0.1"],  # loopback from the first answer on
    "good.test": [GOOD],  # the origin of a redirect...
    "hop.test": [GOOD, "127.0.0.1"],  # ...to a name that rebinds
    "proxy.test": [GOOD, "127.0.0.1"],  # an MLflow artifact proxy that rebinds
    "registry.test": [GOOD, "127.0.0.1"],  # an HTTP manifest registry that rebinds
    "honest.test": [GOOD],  # an HTTP manifest registry that does not...
    "manifest-hop.test": [GOOD, "127.0.0.1"],  # ...and redirects its manifest to one that does
    "mlflow.test": [GOOD, "169.254.169.254"],  # an MLflow registry that rebinds
}


@dataclass
class Namespace:
    """The namespace, its world process and the world's event log."""

    name: str
    events: Path
    proc: subprocess.Popen[bytes]

    def seen(self) -> list[dict[str, Any]]:
        """Every event so far (DNS answers, witness connections)."""
        return [json.loads(line) for line in self.events.read_text().splitlines()]

    def exec(self, *argv: str) -> list[str]:
        """``argv`` run inside the namespace."""
        return ["ip", "netns", "exec", self.name, *argv]


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@pytest.fixture(scope="module")
def netns(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Namespace]:
    """A network namespace with loopback, 10.213.0.1 and 169.254.169.254, and the world in it."""
    assert shutil.which("ip"), "the rebinding tests need iproute2's ip (and root)"
    base = tmp_path_factory.mktemp("rebind")
    name = f"pc-rebind-{secrets.token_hex(3)}"
    etc = Path("/etc/netns") / name
    _ip("netns", "add", name)
    proc = None
    try:
        etc.mkdir(parents=True)
        (etc / "resolv.conf").write_text("nameserver 127.0.0.1\noptions timeout:2 attempts:2\n")
        for args in (
            ("link", "set", "lo", "up"),
            ("addr", "add", f"{GOOD}/32", "dev", "lo"),
            ("addr", "add", "169.254.169.254/32", "dev", "lo"),
        ):
            _ip("netns", "exec", name, "ip", *args)
        config = base / "world.json"
        config.write_text(json.dumps({"names": NAMES, "model": MODEL}))
        events = base / "events.jsonl"
        events.touch()
        world = ["ip", "netns", "exec", name, sys.executable, "-m", "tests.e2e.rebind_world"]
        proc = subprocess.Popen([*world, str(config), str(events)], cwd=REPO)
        space = Namespace(name, events, proc)
        wait_until(lambda: proc.poll() is None and {"event": "ready"} in space.seen(), 30)
        yield space
    finally:
        if proc is not None:
            proc.kill()
            proc.wait(timeout=30)
        _ip("netns", "delete", name)
        shutil.rmtree(etc, ignore_errors=True)


@dataclass
class Outcome:
    """What one ``pointercache init`` did, and what the witnesses and the DNS server saw."""

    code: int
    stderr: str
    connects: list[dict[str, Any]]
    lookups: list[str]
    published: bytes | None
    pointer: Pointer | None


def run_init_in(
    netns: Namespace, cli_env: dict[str, str], tmp_path: Path, registry: str, *extra: str
) -> Outcome:
    """Run init in the namespace against ``registry``; collect the witnesses' view of it."""
    before = len(netns.seen())
    root = tmp_path / "pod"
    args = ["--model", MODEL, "--registry", registry, "--root", str(root)]
    args += ["--lkg-dir", str(tmp_path / "lkg"), "--termination-log", str(tmp_path / "term")]
    args += ["--registry-timeout", "5", *extra]
    proc = subprocess.run(
        netns.exec(*cli("init", *args)),
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    after = netns.seen()[before:]
    model = root / "model"
    return Outcome(
        code=proc.returncode,
        stderr=proc.stderr,
        connects=[e for e in after if e["event"] == "connect"],
        lookups=[e["name"] for e in after if e["event"] == "dns"],
        published=model.read_bytes() if model.is_file() else None,
        pointer=Pointer.read(root / "pointer.json") if model.is_file() else None,
    )


def local_manifest(tmp_path: Path, uri: str) -> str:
    """A file:// registry (a local one) naming ``uri`` without a digest, as a careless one may."""
    path = tmp_path / "registry" / f"{MODEL}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "schema": 1,
        "model": MODEL,
        "revision": 1,
        "aliases": {"production": "1"},
        "versions": {"1": {"uri": uri}},
    }
    path.write_text(json.dumps(doc))
    return path.as_uri()


@pytest.mark.parametrize(
    ("host", "path"),
    [
        ("rebind.test", "/art/model.bin"),  # HTTP artifact
        ("meta.test", "/art/model.bin"),
        ("good.test", "/art/redirect"),  # a redirect to hop.test, which rebinds
    ],
)
def test_http_artifact_is_fetched_from_the_checked_address(
    netns: Namespace, cli_env: dict[str, str], tmp_path: Path, host: str, path: str
) -> None:
    """A name that rebinds after its first answer: the bytes come from the checked address and
    no connection ever reaches loopback or the metadata address."""
    registry = local_manifest(tmp_path, f"http://{host}:{PORT}{path}")
    outcome = run_init_in(netns, cli_env, tmp_path, registry)
    assert outcome.code == 0, outcome.stderr
    assert outcome.connects == []
    assert outcome.published == GOOD_BYTES
    assert host in outcome.lookups  # the real resolver was asked
    if host == "good.test":
        assert outcome.lookups.count("hop.test") == 1  # the redirect target: one lookup, used


def test_mlflow_artifact_proxy_is_fetched_from_the_checked_address(
    netns: Namespace, cli_env: dict[str, str], tmp_path: Path
) -> None:
    """The MLflow artifact fetcher lists and downloads from the checked address only."""
    registry = local_manifest(tmp_path, f"mlflow-artifacts+http://proxy.test:{PORT}/model.bin")
    outcome = run_init_in(netns, cli_env, tmp_path, registry)
    assert outcome.code == 0, outcome.stderr
    assert outcome.connects == []
    assert outcome.published == GOOD_BYTES
    assert "proxy.test" in outcome.lookups


def test_name_that_answers_loopback_is_refused_without_a_connection(
    netns: Namespace, cli_env: dict[str, str], tmp_path: Path
) -> None:
    """A name whose every answer is loopback fails the candidate; the witness sees nothing."""
    registry = local_manifest(tmp_path, f"http://evil.test:{PORT}/art/model.bin")
    outcome = run_init_in(netns, cli_env, tmp_path, registry)
    assert outcome.code == 1
    assert outcome.connects == []
    assert outcome.published is None
    assert "evil.test" in outcome.lookups
    assert "loopback" in (tmp_path / "term").read_text()


@pytest.mark.parametrize("scheme", ["http", "mlflow+http"])
def test_rebinding_registry_never_reaches_a_forbidden_address(
    netns: Namespace, cli_env: dict[str, str], tmp_path: Path, scheme: str
) -> None:
    """An HTTP or MLflow registry whose name rebinds between the preflight and the request is
    refused at the second lookup: nothing connects to loopback or metadata, nothing is served."""
    host = "registry.test" if scheme == "http" else "mlflow.test"
    path = "/m.json" if scheme == "http" else ""
    outcome = run_init_in(netns, cli_env, tmp_path, f"{scheme}://{host}:{PORT}{path}")
    assert outcome.connects == []
    assert outcome.code == 1
    assert outcome.published is None
    assert outcome.lookups.count(host) >= 2  # the preflight's answer, then the rebound one
    assert EVIL_BYTES[:20].decode() not in outcome.stderr


def test_honest_registry_name_is_served(
    netns: Namespace, cli_env: dict[str, str], tmp_path: Path
) -> None:
    """The same setup with a name that keeps its answer serves the registry's artifact."""
    outcome = run_init_in(netns, cli_env, tmp_path, f"http://honest.test:{PORT}/m.json")
    assert outcome.code == 0, outcome.stderr
    assert outcome.connects == []
    assert outcome.published == GOOD_BYTES
    assert outcome.pointer is not None and outcome.pointer.source == "registry"


def test_manifest_redirect_hop_is_fetched_from_the_checked_address(
    netns: Namespace, cli_env: dict[str, str], tmp_path: Path
) -> None:
    """An HTTP registry redirecting its manifest to a name that rebinds: the hop is resolved
    once, the manifest comes from that checked address, nothing reaches loopback."""
    outcome = run_init_in(netns, cli_env, tmp_path, f"http://honest.test:{PORT}/m-redirect")
    assert outcome.code == 0, outcome.stderr
    assert outcome.connects == []
    assert outcome.published == GOOD_BYTES
    assert outcome.lookups.count("manifest-hop.test") == 1
