"""Reloads after a flip: hooks, the loaded probe, retries, refusals, time-outs and what is kept."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from pointercache.errors import ConfigError, HookUnavailable
from pointercache.model.loaded import Ack, UrlTemplate, parse_hooks
from pointercache.service.hooks import Change, ReloadHooks
from pointercache.service.loaded import LoadOptions
from tests.helpers import await_until, make_pointer
from tests.service.conftest import HookServer, Pod, PodFactory

LOAD = "/v2/repository/models/{model}/load"


def hook(server: HookServer, path: str = LOAD) -> tuple[UrlTemplate, ...]:
    """The ``--on-flip-url`` of ``server`` at ``path``."""
    return tuple(parse_hooks([server.url + path]))


def reload_state(pod: Pod) -> str | None:
    """The state of the last reload (pending, loaded, failed)."""
    reload = pod.refresher.loads.status()["reload"]
    return reload["state"] if reload else None


async def test_a_hook_that_answers_2xx_makes_the_new_version_loaded(
    make_pod: PodFactory, hook_server: HookServer
) -> None:
    """After a flip the hook gets the new and previous version; its 200 means loaded via hook."""
    pod = await make_pod(LoadOptions(on_flip=hook(hook_server)))
    v1 = pod.refresher.state.current
    assert await pod.publish(2, "2") == "flipped"
    await await_until(lambda: pod.refresher.state.history[0]["event"] == "loaded")
    assert reload_state(pod) == "loaded"
    method, path, body = hook_server.calls[0]
    assert (method, path) == ("POST", "/v2/repository/models/recommender/load")
    v2 = pod.refresher.state.current
    assert v1 is not None and v2 is not None
    assert body["version"] == "2" and body["digest"] == v2.digest and body["revision"] == 2
    assert body["path"].endswith(f"/versions/recommender/{v2.short}/model")
    assert body["previous"]["version"] == "1" and body["previous"]["digest"] == v1.digest
    loaded = pod.refresher.loads.status()["loaded"]
    assert (loaded["version"], loaded["via"], loaded["current"]) == ("2", "hook", True)
    assert loaded["flip_to_loaded_seconds"] >= 0
    assert pod.metric("pointercache_flip_to_loaded_seconds_count") == 1
    assert pod.metric("pointercache_loaded_info", version="2", via="hook") == 1


async def test_transient_hook_failures_are_retried(
    make_pod: PodFactory, hook_server: HookServer
) -> None:
    """503 and 429 are retried with backoff until the hook answers 200."""
    hook_server.answers["/v2/repository/models/recommender/load"] = [503, 429, 200]
    pod = await make_pod(LoadOptions(on_flip=hook(hook_server)))
    await pod.publish(2, "2")
    await await_until(lambda: reload_state(pod) == "loaded")
    assert len(hook_server.calls) == 3
    assert pod.metric("pointercache_reload_failures_total") == 0


@pytest.mark.parametrize("status", [404, 400, 403, 302])
async def test_a_hook_that_refuses_fails_the_reload_at_once(
    make_pod: PodFactory, hook_server: HookServer, status: int
) -> None:
    """A 4xx (or a redirect, never followed) is not retried: the reload fails with the status."""
    hook_server.answers["/v2/repository/models/recommender/load"] = [status]
    pod = await make_pod(LoadOptions(on_flip=hook(hook_server), timeout=30))
    await pod.publish(2, "2")
    await await_until(lambda: pod.refresher.state.history[0]["event"] == "reload-failed")
    assert reload_state(pod) == "failed"
    assert len(hook_server.calls) == 1
    assert f"HTTP {status}" in pod.refresher.loads.status()["reload"]["error"]
    assert pod.metric("pointercache_reload_failures_total") == 1
    assert hook_server.paths() == ["/v2/repository/models/recommender/load"]


async def test_a_hook_that_never_answers_gives_up_after_the_timeout(
    make_pod: PodFactory, hook_server: HookServer
) -> None:
    """A hanging hook is bounded by --on-flip-timeout; v1 stays loaded and staged meanwhile."""
    hook_server.hang.add("/v2/repository/models/recommender/load")
    pod = await make_pod(LoadOptions(on_flip=hook(hook_server), timeout=1.0))
    v1 = pod.refresher.state.current
    assert v1 is not None
    await pod.refresher.loads.acknowledge(Ack(v1.version, v1.digest))
    await pod.publish(2, "2")
    assert reload_state(pod) == "pending"
    assert pod.staged() == ["2", "1"]  # keep-versions 1, but the model container serves v1
    await await_until(lambda: reload_state(pod) == "failed", timeout=10)
    status = pod.refresher.loads.status()
    assert "not loaded within 1s" in status["reload"]["error"]
    assert status["loaded"]["version"] == "1" and status["loaded"]["current"] is False
    await await_until(lambda: pod.staged() == ["2"])  # given up: v1 is released


async def test_a_persistently_failing_hook_names_its_last_error(
    make_pod: PodFactory, hook_server: HookServer
) -> None:
    """A hook answering 500 until the timeout fails the reload with the last status seen."""
    hook_server.answers["/v2/repository/models/recommender/load"] = [500]
    pod = await make_pod(LoadOptions(on_flip=hook(hook_server), timeout=1.0))
    await pod.publish(2, "2")
    await await_until(lambda: reload_state(pod) == "failed", timeout=10)
    error = pod.refresher.loads.status()["reload"]["error"]
    assert "not loaded within 1s" in error and "HTTP 500" in error
    assert len(hook_server.calls) >= 2


async def test_the_probe_is_polled_until_it_answers_2xx(
    make_pod: PodFactory, hook_server: HookServer
) -> None:
    """With a loaded probe, the flip counts as loaded only once the probe says so (via probe)."""
    hook_server.answers["/v2/models/recommender/versions/2/ready"] = [503, 503, 200]
    probe = UrlTemplate.parse(
        hook_server.url + "/v2/models/{model}/versions/{version}/ready", "--loaded-probe-url"
    )
    pod = await make_pod(LoadOptions(on_flip=hook(hook_server), probe=probe))
    await pod.publish(2, "2")
    await await_until(lambda: reload_state(pod) == "loaded")
    assert hook_server.paths("GET").count("/v2/models/recommender/versions/2/ready") == 3
    assert pod.refresher.loads.status()["loaded"]["via"] == "probe"


async def test_the_probe_finds_the_version_loaded_at_start(
    make_pod: PodFactory, hook_server: HookServer
) -> None:
    """At start-up, with nothing acknowledged yet, the probe tells whether v1 is loaded."""
    probe = UrlTemplate.parse(hook_server.url + "/ready/{version}", "--loaded-probe-url")
    pod = await make_pod(LoadOptions(probe=probe, ready_when="loaded"))
    await await_until(lambda: pod.refresher.loads.ready)
    assert pod.refresher.loads.status()["loaded"]["version"] == "1"
    assert hook_server.paths() == ["/ready/1"]


async def test_an_acknowledgement_ends_a_pending_reload(
    make_pod: PodFactory, hook_server: HookServer
) -> None:
    """While the hook hangs, the model container's own ack of v2 completes the reload."""
    hook_server.hang.add("/v2/repository/models/recommender/load")
    pod = await make_pod(LoadOptions(on_flip=hook(hook_server), timeout=30))
    await pod.publish(2, "2")
    v2 = pod.refresher.state.current
    assert v2 is not None
    await pod.refresher.loads.acknowledge(Ack(v2.version, v2.digest))
    assert reload_state(pod) == "loaded"
    assert pod.refresher.loads.status()["loaded"]["via"] == "ack"


async def test_without_hooks_an_acknowledged_pod_waits_for_the_next_ack(
    make_pod: PodFactory,
) -> None:
    """Once acks are in use, a flip that is never acknowledged fails after the timeout."""
    pod = await make_pod(LoadOptions(timeout=0.5))
    v1 = pod.refresher.state.current
    assert v1 is not None
    await pod.refresher.loads.acknowledge(Ack(v1.version, v1.digest))
    await pod.publish(2, "2")
    await await_until(lambda: reload_state(pod) == "failed", timeout=10)
    assert "not loaded within 0.5s" in pod.refresher.loads.status()["reload"]["error"]


async def test_pods_that_never_acknowledge_are_left_alone(make_pod: PodFactory) -> None:
    """Without hooks, probe, loaded readiness or any ack, a flip starts no reload to fail."""
    pod = await make_pod(LoadOptions(timeout=0.1))
    await pod.publish(2, "2")
    assert pod.refresher.loads.status() == {"loaded": None, "reload": None}
    assert pod.staged() == ["2"]


async def test_a_newer_flip_replaces_a_pending_reload(
    make_pod: PodFactory, hook_server: HookServer
) -> None:
    """v3 published while v2's hook hangs: v2's call is abandoned, v3's hook is called."""
    hook_server.hang.add("/load/2")
    pod = await make_pod(LoadOptions(on_flip=hook(hook_server, "/load/{version}"), timeout=30))
    await pod.publish(2, "2")
    await await_until(lambda: hook_server.paths() == ["/load/2"])
    await pod.publish(3, "3")
    await await_until(lambda: reload_state(pod) == "loaded")
    assert pod.refresher.loads.status()["loaded"]["version"] == "3"
    assert hook_server.paths() == ["/load/2", "/load/3"]


def test_placeholder_values_are_percent_encoded() -> None:
    """A value cannot add path segments or a query: every reserved character is encoded."""
    template = UrlTemplate.parse("http://127.0.0.1:8080/m/{model}/v/{version}?d={digest}", "--x")
    url = template.expand(model="a b", version="1?x=/y", digest="sha256:ab", path="/p")
    assert url == "http://127.0.0.1:8080/m/a%20b/v/1%3Fx%3D%2Fy?d=sha256:ab"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ftp://host/x", "expected an http"),
        ("http:///x", "expected an http"),
        ("http://{model}.svc/x", "path and query only"),
        ("http://h/{name}", "unknown placeholder"),
        ("http://h/{}", "unknown placeholder"),
        ("http://h/{version!r}", "no format spec"),
        ("http://h/{version:>10}", "no format spec"),
        ("http://h/{version", "unbalanced"),
    ],
)
def test_bad_hook_urls_are_configuration_errors(text: str, message: str) -> None:
    """A hook URL that cannot be used is refused at start-up, naming the flag."""
    with pytest.raises(ConfigError, match=message):
        UrlTemplate.parse(text, "--on-flip-url")


async def test_a_secret_in_a_hook_url_reaches_no_status_log_or_event(
    make_pod: PodFactory, hook_server: HookServer, capfd: pytest.CaptureFixture[str]
) -> None:
    """A token in the hook's query string is sent to the hook but redacted from /status, the
    history (Events are made from it) and the log lines."""
    hook_server.answers["/load"] = [403]
    hooks = hook(hook_server, "/load?token=s3cret-hook-token&v={version}")
    pod = await make_pod(LoadOptions(on_flip=hooks, timeout=30))
    await pod.publish(2, "2")
    await await_until(lambda: reload_state(pod) == "failed")
    assert hook_server.paths() == ["/load?token=s3cret-hook-token&v=2"]
    shown = repr(pod.refresher.loads.status()) + repr(list(pod.refresher.state.history))
    out, err = capfd.readouterr()
    assert "HTTP 403" in shown
    assert "s3cret-hook-token" not in shown + out + err


async def test_hook_retries_stop_at_the_deadline_on_their_own(hook_server: HookServer) -> None:
    """Without any outer cancellation, a hanging hook's retries end at the reload's deadline with
    the last failure (a lost cancellation cannot make a reload retry forever)."""
    hook_server.hang.add("/load")
    hooks = ReloadHooks(hook(hook_server, "/load"), timeout=0.5)
    change = Change(make_pointer(), Path("/pointercache/versions/recommender/1-0/model"))
    started = time.monotonic()
    async with asyncio.timeout(30):
        with pytest.raises(HookUnavailable, match="timed out"):
            await hooks.reload(change)
    assert time.monotonic() - started < 10
