"""What a registration is, its idempotency key, and the manifest rule that applies it."""

from __future__ import annotations

import orjson
import pytest

from pointercache.errors import ConfigError, InvalidManifest, RegistrationConflict
from pointercache.model.manifest import parse
from pointercache.model.revision import raised
from pointercache.publish.edit import apply
from pointercache.publish.registration import Outcome, Registration, idempotency_key
from tests.publish.conftest import DIGEST

LIMIT = 1 << 20


def reg(version: str = "1", **fields: object) -> Registration:
    """A valid registration of model ``m``."""
    base: dict[str, object] = {"model": "m", "version": version, "uri": f"s3://b/m/{version}/"}
    return Registration.build(**(base | fields))


def test_the_key_depends_on_model_version_and_digest_only() -> None:
    """Same model, version and digest give the same key; any of them changing changes it."""
    one = reg(digest=DIGEST, alias="production", tags={"a": "b"})
    assert one.key == reg(digest=DIGEST).key
    assert one.key.startswith("pc1-")
    assert len(one.key) == 4 + 64
    assert reg("2", digest=DIGEST).key != one.key
    assert reg(digest="sha256:" + "cd" * 32).key != one.key
    assert reg().key == idempotency_key("m", "1", None, "s3://b/m/1/")
    assert reg(uri="s3://b/other/").key != reg().key


@pytest.mark.parametrize(
    ("fields", "flag"),
    [
        ({"model": "a/b"}, "--model"),  # a space is fine: MLflow accepts "Credit Risk"
        ({"model": "..m"}, "--model"),
        ({"model": "m\x00"}, "--model"),
        ({"version": "../1"}, "--version"),
        ({"alias": "pro duction"}, "--alias"),
        ({"digest": "md5:00"}, "--digest"),
        ({"uri": "https://user:pw@host/m.tgz"}, "--uri"),
        ({"uri": "https://host/m.tgz?X-Amz-Signature=abc"}, "--uri"),
        ({"uri": ""}, "--uri"),
        ({"size_bytes": -1}, "--size-bytes"),
        ({"tags": {"pointercache.digest": "x"}}, "--tag"),
        ({"tags": {"": "x"}}, "--tag"),
        ({"signature": {"inputs": [{"name": "a", "type": "complex"}]}}, "--signature"),
    ],
)
def test_bad_fields_are_config_errors_naming_the_flag(fields: dict[str, object], flag: str) -> None:
    """Each malformed field is refused before anything is queued, naming its flag."""
    with pytest.raises(ConfigError, match=flag):
        reg(**fields)


def test_a_registration_survives_its_json_form() -> None:
    """The outbox payload reads back to an equal registration, byte-identical when re-encoded."""
    one = reg(digest=DIGEST, size_bytes=3, alias="p", tags={"t": "v"}, signature=None)
    again = Registration.from_json(one.to_json())
    assert again == one
    assert again.to_json() == one.to_json()


def test_a_first_registration_creates_the_manifest_at_revision_1() -> None:
    """No manifest yet: one is created with the version, its key, the alias and revision 1."""
    data, receipt = apply(None, reg(digest=DIGEST, alias="production"), max_bytes=LIMIT)
    assert data is not None
    manifest = parse(data, model="m", max_bytes=LIMIT)
    assert manifest.revision == 1
    assert manifest.aliases == {"production": "1"}
    assert manifest.versions["1"].idempotency_key == reg(digest=DIGEST).key
    assert (receipt.outcome, receipt.registry_version, receipt.revision) == (
        Outcome.CREATED,
        "1",
        1,
    )


def test_applying_the_same_registration_again_changes_nothing() -> None:
    """A retry finds its key: no new bytes, outcome 'already', the revision stays."""
    first, _ = apply(None, reg(alias="production"), max_bytes=LIMIT)
    again, receipt = apply(first, reg(alias="production"), max_bytes=LIMIT)
    assert again is None
    assert (receipt.outcome, receipt.revision) == (Outcome.ALREADY, 1)


def test_every_change_raises_the_revision_by_one() -> None:
    """A new version and then an alias move each raise the revision."""
    data, _ = apply(None, reg("1"), max_bytes=LIMIT)
    data, _ = apply(data, reg("2"), max_bytes=LIMIT)
    assert data is not None
    data, receipt = apply(data, reg("2", alias="production"), max_bytes=LIMIT)
    assert data is not None
    assert receipt.outcome is Outcome.ALREADY
    manifest = parse(data, model="m", max_bytes=LIMIT)
    assert (manifest.revision, manifest.aliases["production"]) == (3, "2")


def test_another_artifact_under_the_same_version_is_a_conflict() -> None:
    """Same version, another digest: RegistrationConflict, and nothing is written."""
    data, _ = apply(None, reg(digest=DIGEST), max_bytes=LIMIT)
    with pytest.raises(RegistrationConflict, match="another artifact"):
        apply(data, reg(digest="sha256:" + "cd" * 32), max_bytes=LIMIT)


def test_a_hand_written_identical_entry_is_adopted_and_a_different_one_refused() -> None:
    """A keyless entry with the same URI and digest counts as registered; another URI does not."""
    doc = {
        "schema": 1, "model": "m", "revision": 4, "aliases": {},
        "versions": {"1": {"uri": "s3://b/m/1/", "digest": DIGEST}},
    }  # fmt: skip
    data = orjson.dumps(doc)
    unchanged, receipt = apply(data, reg(digest=DIGEST), max_bytes=LIMIT)
    assert unchanged is None
    assert receipt.outcome is Outcome.ALREADY
    with pytest.raises(RegistrationConflict):
        apply(data, reg(digest=DIGEST, uri="s3://b/elsewhere/"), max_bytes=LIMIT)


def test_a_malformed_manifest_is_never_overwritten() -> None:
    """A manifest that does not validate raises InvalidManifest instead of being replaced."""
    with pytest.raises(InvalidManifest):
        apply(b'{"schema": 1, "model": "m"', reg(), max_bytes=LIMIT)


def test_old_manifests_still_read_and_bad_keys_are_refused() -> None:
    """Entries without the new fields parse as before; a malformed key or tag is refused."""
    old = {"schema": 1, "model": "m", "revision": 1, "aliases": {}, "versions": {"1": {"uri": "u"}}}
    entry = parse(orjson.dumps(old), model="m", max_bytes=LIMIT).versions["1"]
    assert (entry.idempotency_key, dict(entry.tags)) == (None, {})
    for bad in ({"idempotency_key": "pc1-xyz"}, {"tags": {"a": 1}}, {"tags": []}):
        doc = {**old, "versions": {"1": {"uri": "u", **bad}}}
        with pytest.raises(InvalidManifest, match=r"versions\.1"):
            parse(orjson.dumps(doc), model="m", max_bytes=LIMIT)


def test_a_writer_always_raises_the_revision() -> None:
    """The next revision is above the previous one, and at least the clock when one is given."""
    assert raised(None) == 0
    assert raised(4) == 5
    assert raised(4, now_ms=1_000) == 1_000
    assert raised(5_000, now_ms=1_000) == 5_001
