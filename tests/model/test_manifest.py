"""The manifest parser: strict validation with one-line errors, and selection."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from pointercache.errors import InvalidManifest, NotFound
from pointercache.model import manifest
from pointercache.model.candidate import Selector

DIGEST = "sha256:" + "ab" * 32
GOOD: dict[str, Any] = {
    "schema": 1,
    "model": "recommender",
    "revision": 17,
    "aliases": {"production": "8", "candidate": "9"},
    "stages": {"Production": "8"},
    "versions": {
        "8": {
            "uri": "s3://models/recommender/8/",
            "digest": DIGEST,
            "size_bytes": 1234,
            "signature": {"inputs": [{"name": "amount", "type": "double"}]},
        },
        "9": {"uri": "file:///models/9"},
    },
}


def _doc(**changes: Any) -> bytes:
    doc = copy.deepcopy(GOOD)
    for dotted, value in changes.items():
        target = doc
        *path, last = dotted.split("__")
        for key in path:
            target = target[key]
        if value is ...:
            del target[last]
        else:
            target[last] = value
    return orjson.dumps(doc)


def _parse(data: bytes, model: str = "recommender", max_bytes: int = 1 << 20) -> manifest.Manifest:
    return manifest.parse(data, model=model, max_bytes=max_bytes)


def test_alias_selects_the_named_version() -> None:
    """alias:production picks versions[aliases.production] with its digest, size and revision."""
    cand = _parse(_doc()).select(Selector.parse("alias:production"), registry="file:///m.json")
    assert (cand.version, cand.uri, cand.digest, cand.size_bytes) == (
        "8",
        "s3://models/recommender/8/",
        DIGEST,
        1234,
    )
    assert cand.revision == 17
    assert cand.registry == "file:///m.json"
    assert cand.signature == GOOD["versions"]["8"]["signature"]


def test_version_and_stage_selectors() -> None:
    """version:N picks the version directly and stage:X goes through the stages map."""
    parsed = _parse(_doc())
    assert parsed.select(Selector.parse("version:9"), registry="r").digest is None
    assert parsed.select(Selector.parse("stage:Production"), registry="r").version == "8"


def test_stages_are_optional() -> None:
    """A manifest without a stages map is valid; a stage selector then raises NotFound."""
    parsed = _parse(_doc(stages=...))
    with pytest.raises(NotFound, match="stage 'Production'"):
        parsed.select(Selector.parse("stage:Production"), registry="r")


@pytest.mark.parametrize(
    ("selector", "match"),
    [
        ("alias:staging", "alias 'staging'"),
        ("version:7", "version '7'"),
        ("stage:Archived", "stage 'Archived'"),
    ],
)
def test_unknown_selector_targets_are_not_found(selector: str, match: str) -> None:
    """An alias, version or stage the manifest does not list raises NotFound naming it."""
    with pytest.raises(NotFound, match=match):
        _parse(_doc()).select(Selector.parse(selector), registry="r")


BAD_INPUTS = [
    ("malformed", b"{not json", "manifest: not valid JSON"),
    ("truncated", orjson.dumps(GOOD)[:-7], "manifest: not valid JSON"),
    ("empty", b"", "manifest: not valid JSON"),
    ("not an object", b"[1, 2]", "manifest: expected an object"),
    ("schema missing", _doc(schema=...), "schema:"),
    ("schema 2", _doc(schema=2), "schema: 2"),
    ("schema true", _doc(schema=True), "schema: True"),
    ("unknown top field", _doc(extra=1), "manifest.extra: unknown field"),
    ("model mismatch", _doc(model="fraud"), "model: manifest is for 'fraud'"),
    ("model wrong type", _doc(model=5), "model: 5"),
    ("revision string", _doc(revision="17"), "revision: expected an integer from 0 to 2**63-1"),
    ("revision negative", _doc(revision=-1), "revision: expected an integer from 0 to 2**63-1"),
    ("revision bool", _doc(revision=True), "revision: expected an integer from 0 to 2**63-1"),
    (
        "revision over int64",
        _doc(revision=2**63),
        "revision: expected an integer from 0 to 2**63-1",
    ),
    ("aliases list", _doc(aliases=["8"]), "aliases: expected an object"),
    ("aliases missing", _doc(aliases=...), "aliases: expected an object"),
    ("alias to int", _doc(aliases={"production": 8}), "aliases.production: expected a version"),
    (
        "alias dangling",
        _doc(aliases={"production": "99"}),
        "aliases.production: names version '99'",
    ),
    ("stage dangling", _doc(stages={"Production": "99"}), "stages.Production: names version"),
    ("versions list", _doc(versions=[]), "versions: expected an object"),
    ("version not object", _doc(versions__9="file:///x"), "versions.9: expected an object"),
    ("uri missing", _doc(versions__9={}), "versions.9.uri: expected a non-empty string"),
    ("uri int", _doc(versions__9={"uri": 3}), "versions.9.uri: expected a non-empty string"),
    ("digest bad", _doc(versions__8__digest="md5:abc"), "versions.8.digest:"),
    ("digest upper", _doc(versions__8__digest=DIGEST.upper()), "versions.8.digest:"),
    ("size string", _doc(versions__8__size_bytes="1"), "versions.8.size_bytes: expected"),
    ("signature list", _doc(versions__8__signature=[]), "versions.8.signature: expected null"),
    ("unknown version field", _doc(versions__8__etag="x"), "versions.8.etag: unknown field"),
    (
        "traversal version",
        _doc(versions={"../x": {"uri": "file:///x"}}, aliases={}, stages={}),
        "versions key: '../x'",
    ),
    (
        "dot-dot version",
        _doc(versions={"..": {"uri": "file:///x"}}, aliases={}, stages={}),
        "versions key: '..'",
    ),
    (
        "slash version",
        _doc(versions={"a/b": {"uri": "file:///x"}}, aliases={}, stages={}),
        "versions key: 'a/b'",
    ),
    ("traversal model", _doc(model="../recommender"), "model: '../recommender'"),
]


@pytest.mark.parametrize(
    ("data", "match"), [case[1:] for case in BAD_INPUTS], ids=[case[0] for case in BAD_INPUTS]
)
def test_bad_manifests_raise_one_line_errors_naming_the_field(data: bytes, match: str) -> None:
    """Each malformed, wrong-typed or unsafe manifest raises InvalidManifest naming the field."""
    with pytest.raises(InvalidManifest) as info:
        _parse(data)
    message = str(info.value)
    assert match in message
    assert "\n" not in message


def test_oversized_manifest_is_rejected_before_parsing() -> None:
    """A manifest over max_bytes is refused by size, even if it were valid JSON."""
    data = _doc()
    with pytest.raises(InvalidManifest, match=f"{len(data)} bytes is over the 100 limit"):
        _parse(data, max_bytes=100)
    # the limit is exact: the same bytes pass with a limit of their own length
    assert _parse(data, max_bytes=len(data)).revision == 17
    # and the size check comes first: broken JSON over the limit reports the size
    with pytest.raises(InvalidManifest, match="over the 10 limit"):
        _parse(b"{" * 11, max_bytes=10)


def test_manifest_for_requested_model_only() -> None:
    """Parsing for another model name than the manifest's raises InvalidManifest."""
    with pytest.raises(InvalidManifest, match="not 'fraud'"):
        _parse(_doc(), model="fraud")
