"""The revision rule: one table of cases from every caller (sidecar, init, node and cluster LKG)."""

from __future__ import annotations

import pytest

from pointercache.model.candidate import Candidate
from pointercache.model.revision import (
    below_persisted,
    carried_forward,
    is_rollback,
    is_stale,
    may_replace,
    same_candidate,
    same_version,
)
from tests.helpers import make_pointer

D1, D2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64


@pytest.mark.parametrize(
    ("caller", "offered", "held", "refused"),
    [
        ("sidecar", 4, 5, True),  # a lagging replica answers an older revision
        ("sidecar", 5, 5, False),  # the same revision is not stale
        ("sidecar", 6, 5, False),  # a newer one flips
        ("sidecar", 0, 5, True),  # a source without a counter is below what is served
        ("init", 4, 5, True),  # below what the node or cluster LKG holds
        ("init", 5, 5, False),
        ("init", 0, 5, False),  # no counter: not compared
        ("init", 3, 0, False),  # nothing persisted
    ],
)
def test_stale_answers(caller: str, offered: int, held: int, refused: bool) -> None:
    """A running sidecar and a starting pod refuse answers below what they hold."""
    rule = is_stale if caller == "sidecar" else below_persisted
    assert rule(offered, held) is refused


@pytest.mark.parametrize(
    ("stored", "offered", "same_digest_refresh", "allowed"),
    [
        ((5, D1), (3, D2), True, False),  # node LKG: lower revision, other bytes
        ((5, D1), (3, D1), True, True),  # node LKG: same bytes, a provenance refresh
        ((5, D1), (7, D2), True, True),  # node LKG: forward
        ((5, D1), (5, D2), True, True),  # node LKG: equal revision
        ((7, D1), (6, D1), False, False),  # cluster LKG: never lower, even for the same bytes
        ((7, D1), (7, D1), False, True),  # cluster LKG: equal
        ((7, D1), (8, D2), False, True),  # cluster LKG: forward
    ],
)
def test_lkg_overwrites(
    stored: tuple[int, str],
    offered: tuple[int, str],
    same_digest_refresh: bool,
    allowed: bool,
) -> None:
    """An LKG pointer is overwritten only forward (node: or with the same bytes)."""
    old = make_pointer(revision=stored[0], digest=stored[1])
    new = make_pointer(revision=offered[0], digest=offered[1])
    assert may_replace(old, new, same_digest_refresh=same_digest_refresh) is allowed


@pytest.mark.parametrize(("served", "confirmed", "after"), [(5, 8, 8), (8, 5, 8), (5, 5, 5)])
def test_confirmation_carries_the_revision(served: int, confirmed: int, after: int) -> None:
    """A registry confirming the served version moves its revision up, never down."""
    assert carried_forward(served, confirmed) == after


@pytest.mark.parametrize(
    ("offered", "same"),
    [
        ({"version": "1", "digest": D1}, True),
        ({"version": "1", "digest": D2}, False),  # re-uploaded under the same version
        ({"version": "2", "digest": D1}, False),  # same bytes, another version
        ({"version": "1", "uri": "file:///models/recommender/1"}, True),  # no digest: the URI
        ({"version": "1", "uri": "file:///models/recommender/9"}, False),
        (
            {
                "version": "1",
                "uri": "https://u:p@h/m?token=x",
                "served_uri": "https://***@h/m?<redacted>",
            },
            True,
        ),
    ],
)
def test_same_version(offered: dict[str, str], same: bool) -> None:
    """Same model and version, and the same bytes (digest, else the redacted URI)."""
    served_uri = offered.pop("served_uri", "file:///models/recommender/1")
    served = make_pointer(version="1", digest=D1, uri=served_uri)
    candidate = Candidate(
        model="recommender",
        version=offered["version"],
        uri=offered.get("uri", served_uri),
        digest=offered.get("digest"),
    )
    assert same_version(served, candidate) is same


@pytest.mark.parametrize(
    ("previous", "new", "served_before", "rollback"),
    [
        ("9", "8", [], True),  # numerically lower
        ("8", "9", ["9"], False),  # numbers decide when both are numbers
        ("b", "a", ["a"], True),  # served earlier
        ("a", "c", ["a", "b"], False),
    ],
)
def test_rollbacks(previous: str, new: str, served_before: list[str], rollback: bool) -> None:
    """A move to a numerically lower version, or back to one served before, is a rollback."""
    assert (
        is_rollback(make_pointer(version=previous), make_pointer(version=new), served_before)
        is rollback
    )


@pytest.mark.parametrize(
    ("other", "same"),
    [
        ({}, True),
        ({"digest": D2}, False),  # re-uploaded under the same version
        ({"version": "2"}, False),
        ({"uri": "https://h/m/1?token=other"}, True),  # the same once redacted
        ({"uri": "https://h/m/9"}, False),
        ({"digest": None}, False),  # a promise dropped is another answer
    ],
)
def test_same_candidate(other: dict[str, str | None], same: bool) -> None:
    """A download in flight serves only an answer with the same version, digest and URI."""
    first = Candidate(model="recommender", version="1", uri="https://h/m/1?token=x", digest=D1)
    values = {"model": "recommender", "version": "1", "uri": first.uri, "digest": D1} | other
    assert same_candidate(first, Candidate(**values)) is same  # type: ignore[arg-type]
