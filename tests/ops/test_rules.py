"""The alerting rules: valid for promtool, and each alert fires and stays quiet where it should."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO
from tests.tools import tool

RULES = REPO / "deploy" / "prometheus" / "pointercache.rules.yaml"
TESTS = Path(__file__).parent / "rules"
TEST_FILES = sorted(p.name for p in TESTS.glob("*.yaml"))


def alerts() -> dict[str, dict[str, Any]]:
    """Every alerting rule of the rules file, by name."""
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {r["alert"]: r for g in groups for r in g["rules"] if "alert" in r}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    """Run promtool; return the finished process."""
    return subprocess.run(
        [tool("promtool"), *args], capture_output=True, text=True, check=False, timeout=120
    )


def cases(test_file: Path) -> list[tuple[str, list[list[Any]]]]:
    """(alert name, expected alerts at each evaluation) for each test case of a promtool file."""
    out = []
    for case in yaml.safe_load(test_file.read_text())["tests"]:
        checks = case["alert_rule_test"]
        names = {c["alertname"] for c in checks}
        assert len(names) == 1, f"{test_file.name}: one alert per case"
        out.append((names.pop(), [c["exp_alerts"] for c in checks]))
    return out


def test_rules_file_is_valid() -> None:
    """promtool check rules accepts the rules file and counts every rule."""
    proc = promtool("check", "rules", str(RULES))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in proc.stdout


@pytest.mark.parametrize("test_file", TEST_FILES)
def test_promtool_rule_tests_pass(test_file: str) -> None:
    """promtool test rules passes the alert's test file (firing and quiet cases)."""
    proc = promtool("test", "rules", str(TESTS / test_file))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    """Each alert has one test file with a case where it fires and a case where it never does."""
    covered: dict[str, str] = {}
    for name in TEST_FILES:
        found = cases(TESTS / name)
        (alert,) = {a for a, _ in found}
        assert alert not in covered, f"{alert} tested in {covered.get(alert)} and {name}"
        covered[alert] = name
        assert any(any(e) for _, exps in found for e in exps), f"{name}: no firing case"
        assert any(not any(e) for _, exps in found for e in exps), f"{name}: no quiet case"
    assert set(covered) == set(alerts())


def test_every_alert_has_a_runbook() -> None:
    """Each alert links to a runbook section of docs/observability.md that exists."""
    doc = (REPO / "docs" / "observability.md").read_text()
    for name, rule in alerts().items():
        assert rule["annotations"]["runbook_url"].endswith(f"docs/observability.md#{name.lower()}")
        assert f"\n### {name}\n" in doc, name
        section = doc.split(f"\n### {name}\n", 1)[1].split("\n### ", 1)[0]
        for part in ("**What it means.**", "**What to check.**", "**How to fix.**"):
            assert part in section, f"{name}: {part}"


def mutated(tmp_path: Path, alert: str, expr: str, test_file: str) -> Path:
    """The rules with ``alert``'s expression replaced, and its test file pointing at them."""
    doc = yaml.safe_load(RULES.read_text())
    for group in doc["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == alert:
                rule["expr"] = expr
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(doc))
    test = yaml.safe_load((TESTS / test_file).read_text())
    test["rule_files"] = [str(rules)]
    path = tmp_path / test_file
    path.write_text(yaml.safe_dump(test))
    return path


@pytest.mark.parametrize("test_file", TEST_FILES)
@pytest.mark.parametrize("expr", ["vector(1) == 0", "vector(1)"], ids=["never", "always"])
def test_rule_tests_fail_when_the_rule_is_wrong(tmp_path: Path, test_file: str, expr: str) -> None:
    """The alert's tests fail against a rule that never fires, and against one that always does."""
    ((alert, _), *_) = cases(TESTS / test_file)
    proc = promtool("test", "rules", str(mutated(tmp_path, alert, expr, test_file)))
    assert proc.returncode != 0, proc.stdout
    assert "FAILED" in proc.stdout + proc.stderr
