"""The revision rule: one table of cases from every caller (sidecar, init, node and cluster LKG)."""

from __future__ import annotations

from typing import Literal

import pytest

from pointercache.errors import InvalidPointer
from pointercache.model.candidate import Candidate
from pointercache.model.pointer import MAX_REVISION, Pointer, check_revision
from pointercache.model.revision import (
    Claim,
    carried_forward,
    grace_over,
    held_by,
    is_rollback,
    is_stale,
    may_replace,
    same_candidate,
    same_version,
)
from tests.helpers import make_pointer

D1, D2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64
R, R2 = "mlflow+http://registry:5000", "https://cdn.example/recommender.json"
GRACE = 600.0

Caller = Literal["sidecar", "init", "node-lkg", "cluster-lkg"]
Held = tuple[str, str, int]
"""(where the held pointer is or came from, its registry, its revision). For the sidecar the
first item is the served pointer's ``source``; for init it is the LKG read (``node``,
``cluster``) holding a registry-confirmed pointer; for the LKG writers, the stored pointer's
``source``."""


def _pointer(source: str, registry: str, revision: int, digest: str = D1) -> Pointer:
    detail = registry if source == "registry" else f"{source} /var/lib/pointercache (fell back)"
    return make_pointer(source=source, source_detail=detail, revision=revision, digest=digest)


def _takes(
    caller: Caller,
    held: Held | None,
    offered: tuple[str, int],
    *,
    recorded: Claim | None = None,
    refused_for: float = 0.0,
    accepted_lower: bool = False,
) -> bool:
    """True if the caller takes the offered answer (flips, starts on it, overwrites the LKG)."""
    claim = Claim(*offered)
    if held is None:
        return not is_stale(claim, None)
    where, registry, revision = held
    if caller in ("node-lkg", "cluster-lkg"):
        stored, new = _pointer(where, registry, revision), _pointer("registry", *offered, digest=D2)
        shared = caller == "cluster-lkg"
        return may_replace(stored, new, shared=shared, accepted_lower=accepted_lower)
    if caller == "init":  # what the init container holds against a registry answer
        holder = "lkg-cluster" if where == "cluster" else "lkg-node"
        return not is_stale(claim, held_by(holder, _pointer("registry", registry, revision)))
    served = _pointer(where, registry, revision)
    holder = "lkg-node" if where in ("lkg-node", "pinned") else "served"
    refused = is_stale(claim, held_by(holder, served, recorded))
    return not refused or grace_over(refused_for, GRACE)


@pytest.mark.parametrize(
    ("caller", "held", "offered", "extra", "takes"),
    [
        # A running sidecar: the claim behind what it serves.
        ("sidecar", ("registry", R, 5), (R, 4), {}, False),  # a lagging replica of R
        ("sidecar", ("registry", R, 5), (R, 5), {}, True),
        ("sidecar", ("registry", R, 5), (R, 6), {}, True),
        ("sidecar", ("registry", R, 17), (R2, 3), {}, True),  # another registry's own counter
        ("sidecar", ("registry", R, 5), (R, 0), {}, True),  # R without a counter claims nothing
        ("sidecar", ("registry", R, 0), (R, 3), {}, True),  # nothing was claimed for the served
        # MLflow without the tag: no clock stand-in, so a fast clock pins nothing.
        ("sidecar", ("registry", R, 0), (R, 0), {}, True),
        # A bogus 2**63-1 once: refused for the grace period, then accepted.
        ("sidecar", ("registry", R, MAX_REVISION), (R, 18), {"refused_for": 70.0}, False),
        ("sidecar", ("registry", R, MAX_REVISION), (R, 18), {"refused_for": GRACE}, True),
        # Serving what the init container took from an LKG or the pinned version.
        ("sidecar", ("lkg-node", R, 9 * 10**18), (R, 18), {"recorded": Claim(R, 9 * 10**18)}, True),
        ("sidecar", ("pinned", R, 40), (R, 18), {}, True),
        ("sidecar", ("lkg-cluster", R, 17), (R, 16), {"recorded": Claim(R, 17)}, False),
        ("sidecar", ("lkg-cluster", R, 17), (R2, 16), {"recorded": Claim(R, 17)}, True),
        ("sidecar", ("lkg-cluster", R, 17), (R, 16), {}, True),  # a volume of an earlier release
        # A starting pod: the cluster LKG's claim, never the node LKG's.
        ("init", ("cluster", R, 17), (R, 16), {}, False),
        ("init", ("cluster", R, 17), (R, 17), {}, True),
        ("init", ("cluster", R, 17), (R2, 2), {}, True),  # another registry: not compared
        ("init", ("node", R, 9 * 10**18), (R, 5), {}, True),  # a planted node LKG
        ("init", ("node", R, 17), (R, 16), {}, True),  # a node-local file never overrides R
        ("init", None, (R, 3), {}, True),  # nothing persisted
        # Writing the node LKG: always what a registry just confirmed.
        ("node-lkg", ("registry", R, 9 * 10**18), (R, 5), {}, True),
        ("node-lkg", ("registry", R, 5), (R, 3), {}, True),
        ("node-lkg", ("registry", R2, 5), (R, 3), {}, True),
        # Writing the cluster LKG: a higher claim of the same registry stays...
        ("cluster-lkg", ("registry", R, 7), (R, 5), {}, False),
        ("cluster-lkg", ("registry", R, 7), (R, 7), {}, True),
        ("cluster-lkg", ("registry", R, 7), (R, 8), {}, True),
        ("cluster-lkg", ("registry", R, 7), (R2, 2), {}, True),
        ("cluster-lkg", ("registry", R, 7), (R, 0), {}, True),
        ("cluster-lkg", ("lkg-node", R, 7), (R, 5), {}, True),  # not a registry's claim
        # ...unless the writer accepted the lower answer after the grace period.
        ("cluster-lkg", ("registry", R, MAX_REVISION), (R, 18), {"accepted_lower": True}, True),
    ],
)
def test_who_takes_an_answer(
    caller: Caller,
    held: Held | None,
    offered: tuple[str, int],
    extra: dict[str, object],
    takes: bool,
) -> None:
    """A revision is compared only with the same registry's; node files never refuse answers."""
    assert _takes(caller, held, offered, **extra) is takes  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("held", "confirmed", "after"),
    [
        (Claim(R, 5), Claim(R, 8), Claim(R, 8)),  # forward with the same registry
        (Claim(R, 8), Claim(R, 5), Claim(R, 8)),  # a lagging R confirming: never back
        (Claim(R, 5), Claim(R, 5), Claim(R, 5)),
        (Claim(R, 8), Claim(R2, 3), Claim(R2, 3)),  # another registry's claim replaces it
        (None, Claim(R, 3), Claim(R, 3)),  # served from a file: the registry's claim now
        (Claim(R, 8), Claim(R, 0), Claim(R, 0)),  # R lost its counter: nothing to keep
    ],
)
def test_confirmation_carries_the_claim(held: Claim | None, confirmed: Claim, after: Claim) -> None:
    """A registry confirming the served version moves the same registry's claim up, never down."""
    assert carried_forward(held, confirmed) == after


@pytest.mark.parametrize(
    ("pointer", "recorded", "claim"),
    [
        (_pointer("registry", R, 5), None, Claim(R, 5)),
        (_pointer("registry", R, 0), None, None),
        (_pointer("lkg-cluster", R, 17), Claim(R, 17), Claim(R, 17)),
        (_pointer("lkg-cluster", R, 17), None, None),  # a volume of an earlier release
        (_pointer("lkg-node", R, 9 * 10**18), Claim(R, 9 * 10**18), None),
    ],
)
def test_claim_held_by_the_served_version(
    pointer: Pointer, recorded: Claim | None, claim: Claim | None
) -> None:
    """The served version holds its recorded claim, or what its pointer records, never a node's."""
    holder = "lkg-node" if pointer.source == "lkg-node" else "served"
    assert held_by(holder, pointer, recorded) == claim


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        (0, True),
        (17, True),
        (MAX_REVISION, True),
        (MAX_REVISION + 1, False),
        (-1, False),
        (True, False),
        ("17", False),
        (1.5, False),
    ],
)
def test_revision_bounds(value: object, ok: bool) -> None:
    """A revision is an integer from 0 to 2**63-1; anything else is invalid, not clamped."""
    if ok:
        assert check_revision("revision", value) == value
    else:
        with pytest.raises(InvalidPointer, match="revision"):
            check_revision("revision", value)


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
