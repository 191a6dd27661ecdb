"""The revision rule, in one place: whose claim a revision is, when one claim refuses an answer,
what counts as the same version, what is a rollback, when an LKG may be overwritten.

A ``revision`` is a **claim by one registry**: the manifest's ``revision``, or MLflow's
``pointercache.revision`` registered-model tag. Two claims are compared only when the same
registry made both (``comparable``); numbers from different registries are independent
counters, and a registry without a counter (MLflow without the tag) makes no claim at all
(revision 0). No revision is ever made up from a clock, so no comparison depends on which node's
clock ran fast.

Who may refuse a registry answer, and with what:

- the **sidecar**, with the claim behind the version it serves (``is_stale``): a lagging replica
  or a stale CDN edge of the *same* registry answering a lower revision is refused, but only for
  a bounded grace period (``grace_over``): a registry that keeps giving the lower answer that
  long has reset its counter (restored from a backup, fixed a bogus value), and it is accepted;
- the **init container**, with the claim the **cluster** LKG holds for its selector (``held_by``);
- the **node** LKG never: it is a node-local file that anything on the node may write, and a value
  from a node-local file never overrides a registry that answers. The same holds for a version
  the sidecar serves from the node LKG or the pinned fallback: the first registry answer wins.

LKGs are overwritten by ``may_replace``: the node LKG always takes what a registry just confirmed;
the cluster LKG, the fleet's memory, keeps a higher claim of the same registry unless the writer
accepted the lower one after the grace period.

Writers that change a registry (``pointercache publish``, ``pointercache promote``) take the
next revision from ``raised``: always above the registry's current one, whatever the clock says.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from pointercache.base.redact import redact_uri
from pointercache.model.candidate import Candidate
from pointercache.model.pointer import MAX_REVISION, Pointer, check_revision

Holder = Literal["served", "lkg-node", "lkg-cluster"]
"""Where a claim held against registry answers comes from."""


@dataclass(frozen=True, slots=True)
class Claim:
    """``registry`` says its answer is at ``revision`` (0: the registry has no counter)."""

    registry: str
    """Redacted name of the registry that made the claim (``--registry``)."""
    revision: int
    """The registry's own counter, 1..``MAX_REVISION``; 0 when it has none."""

    @property
    def counted(self) -> bool:
        """True when there is a number to compare (a registry and a revision above 0)."""
        return bool(self.registry) and self.revision > 0

    @classmethod
    def of(cls, candidate: Candidate) -> Claim:
        """The claim a registry answer makes."""
        return cls(candidate.registry, candidate.revision)

    @classmethod
    def recorded(cls, pointer: Pointer) -> Claim | None:
        """The claim a registry-confirmed pointer records: (``source_detail``, ``revision``).

        None for a pointer that did not come from a registry (an LKG or the pinned version):
        its revision is a value from a file, not a registry's word.
        """
        if pointer.source != "registry" or pointer.revision <= 0:
            return None
        return cls(pointer.source_detail, pointer.revision)


__all__ = [
    "MAX_REVISION",
    "Claim",
    "carried_forward",
    "check_revision",
    "comparable",
    "grace_over",
    "held_by",
    "is_rollback",
    "is_stale",
    "may_replace",
    "raised",
    "same_candidate",
    "same_version",
]


def comparable(a: Claim | None, b: Claim | None) -> bool:
    """Two claims are compared only when the same registry made both, each with a number."""
    return a is not None and b is not None and a.counted and b.counted and a.registry == b.registry


def is_stale(offered: Claim, held: Claim | None) -> bool:
    """An answer below the claim held against it by the same registry is refused (for now)."""
    return comparable(offered, held) and held is not None and offered.revision < held.revision


def held_by(holder: Holder, pointer: Pointer | None, claim: Claim | None = None) -> Claim | None:
    """The claim ``pointer`` holds against registry answers, by where it comes from.

    ``served``: the claim recorded with the served version (``claim``, written beside it by the
    pod that published it), else what its pointer records. ``lkg-cluster``: what the cluster
    LKG pointer records. ``lkg-node``: nothing, ever — a node-local file never overrides a
    registry that answers, however high the revision it carries.
    """
    if pointer is None or holder == "lkg-node":
        return None
    if holder == "served" and claim is not None:
        return claim
    return Claim.recorded(pointer)


def grace_over(refused_for: float, grace: float) -> bool:
    """A refused answer that the registry kept giving for ``grace`` seconds is accepted.

    ``refused_for`` is measured on the refusing process's monotonic clock, from the first
    refusal of that exact answer (registry, version, revision). A grace of 0 never refuses.
    """
    return refused_for >= grace


def carried_forward(held: Claim | None, confirmed: Claim) -> Claim:
    """The claim behind a served version that a registry has just named again.

    The same registry: the revision moves forward with it, never back (A at 5, then A at 8:
    8; a lagging A at 5 after 8: still 8). Another registry, or none held: its claim replaces
    the old one, since numbers of two registries say nothing about each other.
    """
    if held is not None and comparable(held, confirmed):
        return held if held.revision >= confirmed.revision else confirmed
    return confirmed


def may_replace(
    stored: Pointer, offered: Pointer, *, shared: bool, accepted_lower: bool = False
) -> bool:
    """Whether an LKG entry holding ``stored`` may be overwritten with ``offered``.

    ``offered`` was just confirmed by a registry. The node LKG (``shared=False``) always takes
    it: the file is node-local and untrusted, so its revision (planted or bogus) must not keep
    a registry's answer out. The cluster LKG (``shared=True``), written by every pod of the
    selector, keeps a higher claim of the same registry (a pod with a lagging view must not
    pull the fleet back) unless the writer accepted the lower answer after the grace period
    (``accepted_lower``).
    """
    if not shared or accepted_lower:
        return True
    if offered.source != "registry":
        return False  # only registry-confirmed pointers go into the fleet's memory
    return not is_stale(Claim(offered.source_detail, offered.revision), Claim.recorded(stored))


def same_version(served: Pointer, offered: Candidate) -> bool:
    """True if ``offered`` names what ``served`` holds: same model and version, and the same
    bytes (the digest when the source gives one, else the redacted artifact URI)."""
    if (offered.model, offered.version) != (served.model, served.version):
        return False
    if offered.digest is not None:
        return offered.digest == served.digest
    return redact_uri(offered.uri) == served.uri


def same_candidate(first: Candidate, second: Candidate) -> bool:
    """True if two answers name the same bytes of the same version: model, version, the digest
    (when either gives one) and the redacted artifact URI. A download of ``first`` in flight
    serves ``second`` too; anything else pre-empts it."""
    return (first.model, first.version, first.digest, redact_uri(first.uri)) == (
        second.model,
        second.version,
        second.digest,
        redact_uri(second.uri),
    )


def raised(previous: int | None, now_ms: int | None = None) -> int:
    """The revision a writer sets with a change: always above ``previous`` (None: no revision
    yet). With ``now_ms`` (MLflow's tag, by convention epoch milliseconds) it is at least that;
    a clock behind the last writer's never makes it go down. ``InvalidPointer`` if no revision
    above ``previous`` fits (``MAX_REVISION``).
    """
    floor = 0 if previous is None else previous + 1
    revision = floor if now_ms is None else max(floor, now_ms)
    return check_revision("revision", revision)


def is_rollback(previous: Pointer, new: Pointer, served_before: Iterable[str]) -> bool:
    """A move back to a version served earlier, or to a numerically lower version."""
    if previous.version.isdigit() and new.version.isdigit():
        return int(new.version) < int(previous.version)
    return new.version in set(served_before)
