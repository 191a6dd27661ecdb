"""The "Add it to your pod" snippet is short and is exactly what the tested consumer chart does."""

from __future__ import annotations

import re

import yaml

from tests.chart.conftest import CONSUMER
from tests.conftest import REPO


def snippet() -> list[str]:
    """The code block of docs/chart.md that starts with '# values.yaml'."""
    text = (REPO / "docs" / "chart.md").read_text()
    match = re.search(r"```yaml\n(# values\.yaml\n.*?)```", text, re.DOTALL)
    assert match, "docs/chart.md has no '# values.yaml' block"
    return match.group(1).splitlines()


def test_snippet_fits_in_ten_lines_of_values_and_includes() -> None:
    """Values plus include lines take ten lines or fewer (comments and user lines aside)."""
    counted = [
        ln
        for ln in snippet()
        if ln.strip()
        and not ln.lstrip().startswith("#")
        and not ln.lstrip().startswith("- name: model")
    ]
    assert len(counted) <= 10, counted


def test_snippet_values_are_the_consumer_values() -> None:
    """The values in the snippet are those the consumer chart renders with."""
    lines = snippet()
    end = next(i for i, ln in enumerate(lines) if ln.startswith("# templates/"))
    values = yaml.safe_load("\n".join(lines[:end]))
    assert values == yaml.safe_load((CONSUMER / "values.yaml").read_text())


def test_snippet_include_lines_are_in_the_consumer_template() -> None:
    """Every include line of the snippet appears verbatim in the consumer's Deployment."""
    template = (CONSUMER / "templates" / "deployment.yaml").read_text()
    includes = [ln.split("#")[0].rstrip() for ln in snippet() if "include" in ln]
    assert len(includes) == 4
    for line in includes:
        assert line in template, line
