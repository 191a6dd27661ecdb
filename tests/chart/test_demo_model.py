"""The example chart's demo model: the manifest Helm renders verifies against the bytes it ships."""

from __future__ import annotations

import subprocess
from pathlib import Path

import orjson

from pointercache.model.manifest import parse
from tests.chart.conftest import EXAMPLE, render
from tests.conftest import VENV_BIN


def kubelet_layout(directory: Path, data: dict[str, str]) -> None:
    """Lay ConfigMap data out as the kubelet does: keys are links through ``..data``."""
    payload = directory / "..2026_11_22_00_00_00.000000001"
    payload.mkdir(parents=True)
    for key, value in data.items():
        (payload / key).write_text(value)
    (directory / "..data").symlink_to(payload.name)
    for key in data:
        (directory / key).symlink_to(f"..data/{key}")


def test_demo_manifest_names_the_shipped_file() -> None:
    """The manifest's URI is the mounted ConfigMap key, with the digest and size of its bytes."""
    rendered = render(EXAMPLE)
    cm = next(d for d in rendered.of_kind("ConfigMap") if d["metadata"]["name"].endswith("-model"))
    manifest = parse(cm["data"]["manifest.json"].encode(), model="demo-linear", max_bytes=1 << 20)
    assert manifest.revision == 1
    mount = next(
        m
        for m in rendered.container("pointercache-init")["volumeMounts"]
        if m["name"] == "demo-model"
    )
    assert mount["readOnly"] is True
    registry = next(
        e["value"]
        for e in rendered.container("pointercache-init")["env"]
        if e["name"] == "POINTERCACHE_REGISTRY"
    )
    assert registry == f"file://{mount['mountPath']}/manifest.json"
    version = manifest.versions["1"]
    assert version.uri == f"file://{mount['mountPath']}/model-1.json"


def test_init_stages_the_rendered_demo_model(tmp_path: Path, cli_env: dict[str, str]) -> None:
    """`pointercache init` accepts the rendered manifest and artifact from a kubelet-style mount."""
    cm = next(
        d for d in render(EXAMPLE).of_kind("ConfigMap") if d["metadata"]["name"].endswith("-model")
    )
    data = dict(cm["data"])
    raw = orjson.loads(data["manifest.json"])
    mounted = tmp_path / "etc-pointercache-example"
    entry = raw["versions"]["1"]
    assert entry["uri"] == "file:///etc/pointercache-example/model-1.json"
    entry["uri"] = (mounted / "model-1.json").as_uri()  # where this test mounts it
    data["manifest.json"] = orjson.dumps(raw).decode()
    kubelet_layout(mounted, data)
    root = tmp_path / "pointercache"
    env = {
        **cli_env,
        "POINTERCACHE_MODEL": "demo-linear",
        "POINTERCACHE_REGISTRY": (mounted / "manifest.json").as_uri(),
        "POINTERCACHE_ROOT": str(root),
        "POINTERCACHE_TERMINATION_LOG": str(tmp_path / "termination-log"),
    }
    proc = subprocess.run(
        [str(VENV_BIN / "pointercache"), "init"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert (root / "model").read_text() == cm["data"]["model-1.json"]
    pointer = orjson.loads((root / "pointer.json").read_bytes())
    assert pointer["digest"] == entry["digest"]
