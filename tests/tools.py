"""Find the external tools `make tools` installs (helm, hadolint, promtool, prometheus, ...)."""

from __future__ import annotations

import shutil

import pytest

from tests.conftest import REPO


def tool(name: str) -> str:
    """The path of ``name``: on PATH (``make test`` puts .tools first) or in .tools/.

    A missing tool fails the test, never skips it: a green run means the check really ran.
    """
    local = REPO / ".tools" / name
    found = shutil.which(name) or (str(local) if local.exists() else None)
    if found is None:
        pytest.fail(f"{name} not found on PATH or in .tools/: run `make tools` (see DEVELOPERS.md)")
    return found
