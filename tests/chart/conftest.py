"""Render the charts with the real helm binary and hand the manifests to the tests as dicts."""

from __future__ import annotations

import functools
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO

LIBRARY = REPO / "charts" / "pointercache"
EXAMPLE = REPO / "charts" / "pointercache-example"
CONSUMER = Path(__file__).parent / "consumer"
VALUES = Path(__file__).parent / "values"
VALUES_FILES = sorted(p.name for p in VALUES.glob("*.yaml"))
CUSTOM_API_VERSIONS = frozenset(
    {"monitoring.coreos.com/v1", "gateway.networking.k8s.io/v1", "gateway.envoyproxy.io/v1alpha1"}
)
"""API versions of the custom resources the example chart can render (PodMonitor, PrometheusRule,
HTTPRoute, BackendTrafficPolicy): validated against crd-schemas/, not the built-in models."""
RELEASE = "demo"
NAMESPACE = "models"


def helm_binary() -> str:
    """The helm v4 binary: on PATH (``make test`` puts .tools first) or in .tools/."""
    found = shutil.which("helm") or (
        str(REPO / ".tools" / "helm") if (REPO / ".tools" / "helm").exists() else None
    )
    if found is None:
        pytest.fail("helm not found on PATH or in .tools/: run `make tools` (see DEVELOPERS.md)")
    return found


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run helm with ``args``; fail the test with helm's stderr unless ``check`` is False."""
    proc = subprocess.run(
        [helm_binary(), *args], capture_output=True, text=True, timeout=60, check=False
    )
    if check and proc.returncode != 0:
        pytest.fail(f"helm {' '.join(args)} failed:\n{proc.stderr}")
    return proc


@dataclass(frozen=True)
class Rendered:
    """The documents of one ``helm template`` run."""

    docs: tuple[dict[str, Any], ...]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        """Every document of ``kind``."""
        return [d for d in self.docs if d["kind"] == kind]

    def one(self, kind: str) -> dict[str, Any]:
        """The single document of ``kind``."""
        found = self.of_kind(kind)
        assert len(found) == 1, f"expected one {kind}, got {len(found)}"
        return found[0]

    @property
    def pod(self) -> dict[str, Any]:
        """The pod spec of the single Deployment."""
        spec: dict[str, Any] = self.one("Deployment")["spec"]["template"]["spec"]
        return spec

    def container(self, name: str) -> dict[str, Any]:
        """A container or init container of the pod, by name."""
        pod = self.pod
        for c in [*pod.get("initContainers", []), *pod["containers"]]:
            if c["name"] == name:
                return c
        raise AssertionError(f"no container {name!r}")

    def volume(self, name: str) -> dict[str, Any]:
        """A volume of the pod, by name."""
        for v in self.pod["volumes"]:
            if v["name"] == name:
                return dict(v)
        raise AssertionError(f"no volume {name!r}")


def template_args(chart: Path, values: Sequence[Path], kube_version: str | None) -> list[str]:
    """The ``helm template`` command line for one chart and values files."""
    args = ["template", RELEASE, str(chart), "--namespace", NAMESPACE]
    for path in values:
        args += ["-f", str(path)]
    if kube_version:
        args += ["--kube-version", kube_version]
    return args


@functools.cache
def _render_cached(chart: Path, values: tuple[Path, ...], kube_version: str | None) -> Rendered:
    out = helm(*template_args(chart, values, kube_version)).stdout
    docs = tuple(d for d in yaml.safe_load_all(out) if d)
    return Rendered(docs)


def render(
    chart: Path = EXAMPLE,
    *values_files: str,
    extra: dict[str, Any] | None = None,
    tmp_path: Path | None = None,
    kube_version: str | None = None,
) -> Rendered:
    """Render ``chart`` with named files of tests/chart/values and an optional override dict."""
    paths = [VALUES / name for name in values_files]
    if extra is not None:
        assert tmp_path is not None, "an override needs tmp_path"
        override = tmp_path / "override.yaml"
        override.write_text(yaml.safe_dump(extra))
        paths.append(override)
    return _render_cached(chart, tuple(paths), kube_version)


def render_error(
    tmp_path: Path, extra: dict[str, Any], *, chart: Path = EXAMPLE, kube_version: str | None = None
) -> str:
    """Render with ``extra`` values that must be refused; return helm's error text."""
    override = tmp_path / "override.yaml"
    override.write_text(yaml.safe_dump(extra))
    proc = helm(*template_args(chart, [override], kube_version), check=False)
    assert proc.returncode != 0, f"helm accepted {extra}:\n{proc.stdout[:2000]}"
    return proc.stderr


def containers_of(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every container and init container of a Deployment document."""
    pod = doc["spec"]["template"]["spec"]
    yield from pod.get("initContainers", [])
    yield from pod["containers"]
