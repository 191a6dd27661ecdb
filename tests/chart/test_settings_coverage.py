"""Every setting a user may need has a chart value: the rendered environments cover the CLI."""

from __future__ import annotations

import dataclasses

from pointercache.sync.settings import INIT, SIDECAR, Settings, env_name
from tests.chart.conftest import EXAMPLE, VALUES_FILES, render

NOT_IN_CHART = {
    # The chart keeps the default (/dev/termination-log), which is the container's
    # terminationMessagePath; another path would hide the reason from `kubectl describe`.
    "POINTERCACHE_TERMINATION_LOG",
}
"""Settings the chart deliberately does not expose, each with its reason."""

CONTAINER = {INIT: "pointercache-init", SIDECAR: "pointercache-sidecar"}


def role_settings(role: str) -> set[str]:
    """The POINTERCACHE_* names of every setting of ``role``."""
    return {env_name(f.name) for f in dataclasses.fields(Settings) if role in f.metadata["roles"]}


def rendered_env(role: str) -> set[str]:
    """Every POINTERCACHE_* name the chart renders for ``role`` over all values files."""
    names: set[str] = set()
    for values_file in [None, *VALUES_FILES]:
        rendered = render(EXAMPLE, *([values_file] if values_file else []))
        container = rendered.container(CONTAINER[role])
        names |= {e["name"] for e in container["env"] if e["name"].startswith("POINTERCACHE_")}
    return names


def test_every_init_setting_has_a_chart_value() -> None:
    """Each init container setting is rendered by some values file, or is a listed exception."""
    missing = role_settings(INIT) - rendered_env(INIT) - NOT_IN_CHART
    assert not missing, f"settings without a chart value: {sorted(missing)}"


def test_every_sidecar_setting_has_a_chart_value() -> None:
    """Each sidecar setting is rendered by some values file, or is a listed exception."""
    missing = role_settings(SIDECAR) - rendered_env(SIDECAR) - NOT_IN_CHART
    assert not missing, f"settings without a chart value: {sorted(missing)}"


def test_exceptions_are_real_settings() -> None:
    """Every listed exception names an existing setting (a rename must update the list)."""
    assert role_settings(INIT) | role_settings(SIDECAR) >= NOT_IN_CHART
