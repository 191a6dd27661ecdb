"""``pointercache demo``: the whole story on temporary directories, no cluster, no cloud.

1. publish v1 into a local manifest and run the init container (pod A);
2. start pod A's sidecar, promote v2 in the manifest, and watch the pointer flip;
3. take the registry away and start pod B on the same node: ready from the node's LKG;
4. start pod C on a fresh node with neither registry nor LKG: ready from the pinned version.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pointercache.model.digest import tree_digest
from pointercache.model.pointer import Pointer
from pointercache_cli.artifacts import make_artifact, write_manifest
from pointercache_cli.tools import render_status

MODEL = "recommender"


def _say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def _make_artifact(root: Path, version: str) -> tuple[str, int]:
    weights = json.dumps({"bias": 0.1 * int(version), "w": [1, 2, 3]}).encode()
    mlmodel = f"artifact_path: model\nrun_id: demo-{version}\n".encode()
    path = make_artifact(root, version, files={"weights.json": weights, "MLmodel": mlmodel})
    return tree_digest(path)


def _publish(manifest: Path, root: Path, revision: int, production: str) -> None:
    write_manifest(
        manifest, root, model=MODEL, revision=revision, aliases={"production": production}
    )


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "pointercache_cli", *args]


def _pod(role: str, pod: Path, node: Path, registry: Path, *extra: str) -> list[str]:
    """The command line of one role for a pod whose volume is ``pod`` on node ``node``."""
    common = ["--model", MODEL, "--registry", registry.as_uri(), "--root", str(pod)]
    return _cli(role, *common, "--lkg-dir", str(node), "--log-level", "warning", *extra)


def _init(pod: Path, node: Path, registry: Path, extra: Sequence[str] = ()) -> int:
    term = str(pod.parent / f"{pod.name}.term")
    cmd = _pod("init", pod, node, registry, "--termination-log", term, *extra)
    started = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)  # noqa: S603
    took = time.monotonic() - started
    print(f"   init exit={proc.returncode} in {took:.2f}s")
    if proc.returncode != 0:
        print("   " + _short(proc.stderr.strip().splitlines()[-1]))
    return proc.returncode


_BASE: list[str] = []


def _short(text: str) -> str:
    """Show paths under the demo directory as $DEMO/..., so the tables stay readable."""
    for base in _BASE:
        text = text.replace("file://" + base, "$DEMO").replace(base, "$DEMO")
    return text


def _table(rows: list[tuple[str, Pointer | None]]) -> None:
    print(f"   {'pod':<6} {'version':<8} {'source':<10} {'digest':<20} detail")
    for pod, p in rows:
        if p is None:
            print(f"   {pod:<6} {'-':<8} {'-':<10} {'-':<20} (not ready)")
            continue
        detail = _short(p.source_detail)
        print(f"   {pod:<6} {p.version:<8} {p.source:<10} {p.digest[:19]:<20} {detail}")


def _pointer(pod: Path) -> Pointer | None:
    try:
        return Pointer.read(pod / "pointer.json")
    except (OSError, ValueError):
        return None


def _get(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310
        data: dict[str, Any] = json.loads(resp.read())
        return data


def _start_sidecar(pod: Path, node: Path, registry: Path, port: int) -> subprocess.Popen[str]:
    listen = f"127.0.0.1:{port}"
    cmd = _pod("sidecar", pod, node, registry, "--listen", listen, "--poll-interval", "30")
    return subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)  # noqa: S603


def _wait_for(predicate: Any, timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if predicate():
                return time.monotonic() - started
        except OSError:
            pass
        time.sleep(0.02)
    raise SystemExit(f"demo: timed out after {timeout}s")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def scenario(base: Path) -> int:
    """Run the four steps under ``base``; return 0 when every step behaved."""
    _BASE[:] = [str(base)]
    print(f"(paths below are relative to $DEMO = {base})")
    registry = base / "registry" / f"{MODEL}.json"
    registry.parent.mkdir(parents=True)
    node1, node2 = base / "node-1-lkg", base / "node-2-lkg"
    v1_digest, _ = _make_artifact(base, "1")
    _publish(registry, base, revision=1, production="1")

    _say("1. registry has v1; pod A's init container resolves, stages and publishes it")
    ok = _init(base / "pod-a", node1, registry) == 0
    _table([("pod-a", _pointer(base / "pod-a"))])

    _say("2. pod A's sidecar is running; v2 is promoted in the manifest")
    port = _free_port()
    sidecar = _start_sidecar(base / "pod-a", node1, registry, port)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for(lambda: _get(url + "/status")["ready"], 60)
        _make_artifact(base, "2")
        promoted = time.monotonic()
        _publish(registry, base, revision=2, production="2")
        _wait_for(lambda: _get(url + "/status")["current"]["version"] == "2", 60)
        print(
            f"   flipped to v2 {1000 * (time.monotonic() - promoted):.0f} ms after the "
            "manifest changed (file watch, no poll)"
        )
        print("   " + _short(render_status(_get(url + "/status"))).replace("\n", "\n   ").rstrip())
    finally:
        sidecar.terminate()
        sidecar.wait(10)
    ok = ok and _pointer(base / "pod-a") is not None

    _say("3. the registry is gone; pod B starts on the same node")
    registry.rename(registry.with_suffix(".gone"))
    ok = _init(base / "pod-b", node1, registry) == 0 and ok
    _table([("pod-a", _pointer(base / "pod-a")), ("pod-b", _pointer(base / "pod-b"))])

    _say("4. pod C starts on a new node: no registry, no LKG, only the pinned version")
    pinned = [
        "--pinned-version",
        "1",
        "--pinned-uri",
        (base / "artifacts" / "v1").as_uri(),
        "--pinned-digest",
        v1_digest,
    ]
    ok = _init(base / "pod-c", node2, registry, pinned) == 0 and ok
    _say("5. pod D: a new node, no registry, no LKG, nothing pinned")
    failed = _init(base / "pod-d", base / "node-3-lkg", registry) == 1
    _table([(p, _pointer(base / p)) for p in ("pod-a", "pod-b", "pod-c", "pod-d")])
    ok = ok and failed and _pointer(base / "pod-d") is None
    _say(
        "demo "
        + (
            "passed: every pod became ready without a live registry, or said why not"
            if ok
            else "FAILED"
        )
    )
    return 0 if ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo in a temporary directory (kept with ``--keep``)."""
    parser = argparse.ArgumentParser(
        prog="pointercache demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    if args.keep:
        base = Path(tempfile.mkdtemp(prefix="pointercache-demo-"))
        print(f"working in {base}")
        return scenario(base)
    with tempfile.TemporaryDirectory(prefix="pointercache-demo-") as tmp:
        return scenario(Path(tmp))
