"""Acknowledgements: what may be acknowledged, what is refused with 409, and what it changes."""

from __future__ import annotations

import pytest

from pointercache.errors import InvalidAck, NotStaged
from pointercache.model.loaded import Ack, Loaded, Via
from pointercache.service.loaded import LoadOptions
from tests.helpers import MODEL, await_until
from tests.service.conftest import PodFactory

UNKNOWN = "sha256:" + "ab" * 32


def ack_of(pod_pointer: object) -> Ack:
    """The acknowledgement of a pointer's version and digest."""
    return Ack(version=pod_pointer.version, digest=pod_pointer.digest)  # type: ignore[attr-defined]


async def test_an_acknowledgement_of_the_current_version_is_recorded(make_pod: PodFactory) -> None:
    """Acknowledging the published version records it as loaded via ack, and as current."""
    pod = await make_pod()
    current = pod.refresher.state.current
    assert current is not None
    mark = await pod.refresher.loads.acknowledge(ack_of(current))
    assert (mark.version, mark.digest, mark.via) == ("1", current.digest, Via.ACK)
    status = pod.refresher.loads.status()["loaded"]
    assert status["version"] == "1" and status["current"] is True and status["via"] == "ack"
    assert pod.metric("pointercache_loaded_info", version="1", via="ack") == 1


@pytest.mark.parametrize(
    ("version", "digest", "model", "reason"),
    [
        ("9", None, None, "version 9 with digest"),  # a version never staged
        ("1", UNKNOWN, None, f"digest {UNKNOWN} is not staged"),  # right name, other bytes
        ("2", "current", None, "version 2 with digest"),  # the current bytes under another name
        ("1", "current", "other-model", "model 'other-model' is not served here"),
    ],
)
async def test_an_acknowledgement_of_something_not_staged_is_refused(
    make_pod: PodFactory, version: str, digest: str | None, model: str | None, reason: str
) -> None:
    """Anything but a (version, digest) pair installed on the volume is NotStaged, with why."""
    pod = await make_pod()
    current = pod.refresher.state.current
    assert current is not None
    digest = current.digest if digest in (None, "current") else digest
    with pytest.raises(NotStaged, match=reason) as caught:
        await pod.refresher.loads.acknowledge(Ack(version=version, digest=digest, model=model))
    if model is None:
        assert f"staged: 1 ({current.digest[:19]})" in str(caught.value)
    assert pod.refresher.loads.loaded is None
    assert pod.metric("pointercache_loaded_info") is None


async def test_an_older_staged_version_is_accepted_and_shown_as_not_current(
    make_pod: PodFactory,
) -> None:
    """After a flip to v2, an acknowledgement of v1 (still staged) says v1 is what is served."""
    pod = await make_pod(keep_versions=2)
    v1 = pod.refresher.state.current
    assert v1 is not None
    await pod.refresher.loads.acknowledge(ack_of(v1))
    assert await pod.publish(2, "2") == "flipped"
    mark = await pod.refresher.loads.acknowledge(ack_of(v1))
    assert mark.version == "1"
    assert pod.refresher.loads.status()["loaded"]["current"] is False


async def test_the_last_load_survives_a_sidecar_restart(make_pod: PodFactory) -> None:
    """A new tracker on the same volume reads the acknowledged version back (ready at once)."""
    pod = await make_pod(LoadOptions(ready_when="loaded"))
    current = pod.refresher.state.current
    assert current is not None
    assert not pod.refresher.loads.ready
    await pod.refresher.loads.acknowledge(ack_of(current))
    from pointercache.service.loaded import LoadTracker

    restarted = LoadTracker(pod.parts.store, MODEL, LoadOptions(ready_when="loaded"))
    restarted.restore(current)
    assert restarted.ready
    assert restarted.loaded is not None and restarted.loaded.digest == current.digest


async def test_a_saved_load_of_a_version_no_longer_staged_is_forgotten(
    make_pod: PodFactory,
) -> None:
    """A saved state naming a collected version is not restored (it would claim a lie)."""
    pod = await make_pod(LoadOptions(timeout=0.2))
    current = pod.refresher.state.current
    assert current is not None
    await pod.refresher.loads.acknowledge(ack_of(current))
    assert await pod.publish(2, "2") == "flipped"
    await await_until(lambda: pod.refresher.loads.status()["reload"]["state"] == "failed")
    await pod.publish(3, "3")
    assert "1" not in pod.staged()
    from pointercache.service.loaded import LoadTracker

    restarted = LoadTracker(pod.parts.store, MODEL)
    restarted.restore(pod.refresher.state.current)
    assert restarted.loaded is None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "not valid JSON"),
        (b"[]", "expected a JSON object"),
        (b'{"version": "1"}', "digest"),
        (b'{"digest": "sha256:' + b"a" * 64 + b'"}', "version"),
        (b'{"version": 1, "digest": "sha256:' + b"a" * 64 + b'"}', "version"),
        (b'{"version": "../etc", "digest": "sha256:' + b"a" * 64 + b'"}', "version"),
        (b'{"version": "1", "digest": "sha256:' + b"A" * 64 + b'"}', "digest"),
        (b'{"version": "1", "digest": "md5:abc"}', "digest"),
        (b'{"version": "1", "digest": "sha256:' + b"a" * 64 + b'", "digests": 1}', "unknown"),
        (b'{"version": "1", "digest": "sha256:' + b"a" * 64 + b'", "model": "a/b"}', "model"),
        (b'{"version": "1", "pad": "' + b"x" * 5000 + b'"}', "over the 4096 limit"),
    ],
)
def test_malformed_acknowledgements_are_refused_with_the_reason(body: bytes, message: str) -> None:
    """Ack.parse names what is wrong with a body; nothing malformed becomes an Ack."""
    with pytest.raises(InvalidAck, match=message):
        Ack.parse(body)


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        '{"version": "1", "digest": "sha256:' + "a" * 64 + '", "via": "rumour", "at": "now"}',
        '{"version": "1", "digest": "sha256:' + "a" * 64 + '", "via": "ack", "at": "yesterday"}',
        '{"version": "1", "digest": "sha256:' + "a" * 64 + '", "via": "ack"}',
        '{"version": "1", "digest": "x", "via": "ack", "at": "2026-01-01T00:00:00Z"}',
        "{" + " " * 2000 + "}",
    ],
)
def test_a_loaded_mark_from_outside_is_validated(text: str) -> None:
    """An annotation or saved state that does not validate is refused, not half-read."""
    with pytest.raises(InvalidAck):
        Loaded.parse(text)


def test_a_loaded_mark_round_trips() -> None:
    """The annotation form of a Loaded reads back to the same value."""
    mark = Loaded("8", "sha256:" + "c" * 64, Via.HOOK, "2026-01-01T00:00:00.000Z")
    assert Loaded.parse(mark.to_json()) == mark
