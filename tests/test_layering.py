"""Layering rules that keep the start-up path light and the adapters honest.

import-linter checks that the core never imports an entrypoint and that boto3 and kubernetes
stay in their adapters; this module checks what it cannot express (subpackages of external
packages) and what the init container really loads when it runs.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

PACKAGES = ("pointercache", "initcontainer", "sidecar", "pointercache_cli")
ONLY_IN = {
    "boto3": {"pointercache/adapters/s3.py"},
    "botocore": {"pointercache/adapters/s3.py"},
    "kubernetes": {
        "pointercache/adapters/kube/client.py",
        "pointercache/adapters/kube/errors.py",
    },
    "opentelemetry.sdk": {"sidecar/telemetry.py"},
    "opentelemetry.exporter": {"sidecar/telemetry.py"},
    "prometheus_client": {"sidecar/telemetry.py"},
    "mlflow": set(),
}


RUNTIME_ONLY_IN = {
    "aiohttp": {
        "pointercache/adapters/http.py",
        "pointercache/service/app.py",
        "pointercache/service/server.py",
    },
    "yarl": {"pointercache/adapters/http.py"},
}
"""Imports that may appear elsewhere only under ``if TYPE_CHECKING:`` (annotations)."""


def imported_modules(path: Path, *, runtime_only: bool = False) -> set[str]:
    """Every module name an ``import`` or ``from ... import`` in ``path`` names.

    With ``runtime_only``, imports inside ``if TYPE_CHECKING:`` blocks are left out.
    """
    tree = ast.parse(path.read_text(), str(path))
    skipped: set[int] = set()
    if runtime_only:
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING"):
                skipped |= {id(n) for child in node.body for n in ast.walk(child)}
    names: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("module", sorted(RUNTIME_ONLY_IN))
def test_http_client_stays_in_the_http_adapter(module: str) -> None:
    """aiohttp (as a client) and yarl run only in adapters/http; the sidecar's server uses
    aiohttp.web. Other modules may name their types for annotations only."""
    users = set()
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            names = imported_modules(path, runtime_only=True)
            if any(n == module or n.startswith(module + ".") for n in names):
                users.add(str(path.relative_to(REPO)))
    allowed = RUNTIME_ONLY_IN[module] | {p for p in users if not p.startswith("pointercache/")}
    assert users <= allowed, f"{module} imported at run time by {sorted(users - allowed)}"


@pytest.mark.parametrize("module", sorted(ONLY_IN))
def test_heavy_modules_stay_in_their_adapter(module: str) -> None:
    """boto3, kubernetes, the OTel SDK and mlflow are imported only where they belong."""
    users = set()
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            if any(n == module or n.startswith(module + ".") for n in imported_modules(path)):
                users.add(str(path.relative_to(REPO)))
    assert users <= ONLY_IN[module], f"{module} imported by {sorted(users - ONLY_IN[module])}"


def test_init_does_not_load_heavy_modules(tmp_path: Path) -> None:
    """``pointercache init`` with a file registry never loads boto3, kubernetes, aiohttp, or the
    reader's HTTP client (``reader.acknowledge`` imports it when called)."""
    probe = (
        "import sys, runpy\n"
        "sys.argv = ['pointercache', 'init', '--model', 'm', '--registry',"
        f" 'file://{tmp_path}/missing.json', '--root', '{tmp_path}/root',"
        f" '--termination-log', '{tmp_path}/term']\n"
        "try:\n    runpy.run_module('pointercache_cli', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "heavy = ['boto3', 'botocore', 'kubernetes', 'aiohttp', 'opentelemetry.sdk', 'mlflow',"
        " 'urllib.request']\n"
        "print(','.join(m for m in heavy if m in sys.modules))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False
    )
    assert "no servable model" in proc.stderr
    assert proc.stdout.strip() == ""
