"""The Dockerfiles: hadolint-clean, multi-stage, pinned, non-root, exec-form entrypoint."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO

DOCKERFILES = [REPO / "Dockerfile", REPO / "examples" / "model_server" / "Dockerfile"]
OCI_LABELS = [
    "org.opencontainers.image.title:text",
    "org.opencontainers.image.version:text",
    "org.opencontainers.image.source:url",
    "org.opencontainers.image.licenses:spdx",
    "org.opencontainers.image.description:text",
]


def hadolint() -> str:
    """The hadolint binary: on PATH (``make test``) or in .tools/."""
    found = shutil.which("hadolint") or (
        str(REPO / ".tools" / "hadolint") if (REPO / ".tools" / "hadolint").exists() else None
    )
    if found is None:
        pytest.fail("hadolint not found on PATH or in .tools/: run `make tools` (DEVELOPERS.md)")
    return found


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=["image", "example-server"])
def test_hadolint_clean(dockerfile: Path) -> None:
    """hadolint reports nothing, not even style, with inline ignores disabled and OCI labels set."""
    args = [hadolint(), "--no-color", "--failure-threshold", "style", "--disable-ignore-pragma"]
    for label in OCI_LABELS:
        args += ["--require-label", label]
    proc = subprocess.run([*args, str(dockerfile)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path: Path) -> None:
    """The lint run above is able to fail: an unpinned root image is reported."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN pip install requests\n")
    proc = subprocess.run(
        [hadolint(), "--failure-threshold", "style", str(bad)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode != 0
    assert "DL3006" in proc.stdout  # always tag the version of an image explicitly


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    pairs = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            word, _, rest = stripped.partition(" ")
            pairs.append((word.upper(), rest.strip()))
    return pairs


def test_image_is_multi_stage_from_a_pinned_base() -> None:
    """Builder and runtime stages share one base pinned by patch tag and digest."""
    steps = instructions(REPO / "Dockerfile")
    args = dict(a.split("=", 1) for kind, a in steps if kind == "ARG" and "=" in a)
    assert re.fullmatch(
        r"python:3\.11\.\d+-slim-bookworm@sha256:[0-9a-f]{64}", args["PYTHON_IMAGE"]
    )
    froms = [a for kind, a in steps if kind == "FROM"]
    assert froms == ["${PYTHON_IMAGE} AS builder", "${PYTHON_IMAGE} AS runtime"]


def test_dependencies_are_installed_before_the_project() -> None:
    """The lock is copied and installed before any source, and the project goes in --no-deps."""
    steps = instructions(REPO / "Dockerfile")
    text = [f"{kind} {a}" for kind, a in steps]
    lock = text.index("COPY requirements/runtime.txt requirements/runtime.txt")
    deps = next(i for i, s in enumerate(text) if "-r requirements/runtime.txt" in s)
    source = text.index("COPY pointercache pointercache")
    project = next(i for i, s in enumerate(text) if "--no-deps ." in s)
    assert lock < deps < source < project


def test_runtime_stage_holds_only_the_virtualenv_and_runs_as_10001() -> None:
    """The runtime copies only /opt/venv, sets a numeric USER and an exec-form ENTRYPOINT."""
    steps = instructions(REPO / "Dockerfile")
    runtime = steps[[a for _k, a in steps].index("${PYTHON_IMAGE} AS runtime") :]
    copies = [a for kind, a in runtime if kind == "COPY"]
    assert copies == ["--from=builder /opt/venv /opt/venv"]
    users = [a for kind, a in runtime if kind == "USER"]
    assert users == ["10001:10001"]
    assert [a for kind, a in runtime if kind == "ENTRYPOINT"] == ['["pointercache"]']
    env = " ".join(a for kind, a in runtime if kind == "ENV")
    assert "HOME=/tmp" in env and "PYTHONDONTWRITEBYTECODE=1" in env
    builder_env = " ".join(a for kind, a in steps[: len(steps) - len(runtime)] if kind == "ENV")
    assert "UV_COMPILE_BYTECODE=1" in builder_env


def test_chart_runs_the_image_user() -> None:
    """The chart's default UID is the image's USER."""
    values = (REPO / "charts" / "pointercache" / "values.yaml").read_text()
    assert "runAsUser: 10001" in values
    assert "USER 10001:10001" in (REPO / "Dockerfile").read_text()


def test_dockerignore_keeps_the_context_to_what_is_copied() -> None:
    """.dockerignore excludes everything but the files the Dockerfile copies."""
    lines = [
        ln
        for ln in (REPO / ".dockerignore").read_text().splitlines()
        if ln and not ln.startswith("#")
    ]
    assert lines[0] == "*"
    allowed = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    copied = set()
    for kind, arg in instructions(REPO / "Dockerfile"):
        if kind == "COPY" and not arg.startswith("--from"):
            copied.update(p.rstrip("/") for p in arg.split()[:-1])
    assert copied == allowed


def test_uv_is_pinned_by_hash_in_the_digest_pinned_builder() -> None:
    """No second image: uv comes from PyPI with --require-hashes, pinned in requirements/uv.txt."""
    steps = instructions(REPO / "Dockerfile")
    assert not [a for kind, a in steps if kind == "COPY" and a.startswith("--from=") and ":" in a]
    runs = [a for kind, a in steps if kind == "RUN"]
    assert any("--require-hashes -r requirements/uv.txt" in a for a in runs)
    lock = (REPO / "requirements" / "uv.txt").read_text()
    assert re.search(r"^uv==\d+\.\d+\.\d+ \\$", lock, re.MULTILINE)
    assert lock.count("--hash=sha256:") >= 10  # one per platform wheel, and the sdist
