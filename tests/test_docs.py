"""The README's configuration table and the CLI's --help say what the code does."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys

from pointercache.sync.settings import SIDECAR, Settings, env_name
from tests.conftest import REPO

README = (REPO / "README.md").read_text()


def table_rows() -> dict[str, list[str]]:
    """Configuration table rows of the README: flag → cells."""
    rows = {}
    for line in README.splitlines():
        match = re.match(r"\| `(--[a-z-]+)` \|", line)
        if match:
            rows[match.group(1)] = [c.strip() for c in line.strip("|").split("|")]
    return rows


def test_every_setting_is_in_the_readme_table() -> None:
    """Each setting has a row with its flag, environment name, default and role."""
    rows = table_rows()
    for f in dataclasses.fields(Settings):
        flag = "--" + f.name.replace("_", "-")
        assert flag in rows, f"{flag} missing from the README table"
        cells = rows[flag]
        assert cells[1] == f"`{env_name(f.name)}`"
        roles = f.metadata["roles"]
        assert cells[3] == ("both" if len(roles) == 2 else roles[0])
        if f.default not in (dataclasses.MISSING, None, "", ()):
            assert str(f.default) in cells[2], f"{flag}: default {f.default} not in README"


def test_the_readme_table_names_no_unknown_flag() -> None:
    """No row documents a flag the code does not have."""
    known = {"--" + f.name.replace("_", "-") for f in dataclasses.fields(Settings)}
    assert set(table_rows()) <= known


def test_sidecar_help_lists_every_sidecar_flag() -> None:
    """``pointercache sidecar --help`` shows every flag of the role with its env name."""
    out = subprocess.run(
        [sys.executable, "-m", "pointercache_cli", "sidecar", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for f in dataclasses.fields(Settings):
        if SIDECAR in f.metadata["roles"]:
            assert "--" + f.name.replace("_", "-") in out
            assert env_name(f.name) in out


def test_readme_shows_the_two_commands() -> None:
    """The README's quick start names ``make demo`` and ``make test``."""
    assert "make demo" in README and "make test" in README


def test_every_test_named_in_the_safety_table_exists() -> None:
    """docs/safety.md's attack table names only tests that exist (file::function)."""
    text = (REPO / "docs" / "safety.md").read_text()
    table = text[text.index("## Attack classes") :]
    rows = [line for line in table.splitlines() if line.startswith("| ") and "::" in line]
    assert len(rows) >= 20
    for row in rows:
        proof = row.rstrip(" |").rsplit(" | ", 1)[-1]
        path = None
        for ref in re.findall(r"`((?:tests/[\w/]+\.py)?::\w+)`", proof):
            file, _, name = ref.partition("::")
            path = REPO / file if file else path
            assert path is not None and path.is_file(), f"{ref}: no such test file"
            assert re.search(rf"^(async )?def {name}\(", path.read_text(), re.MULTILINE), (
                f"{ref}: no test"
            )
