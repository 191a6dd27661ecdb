"""The revision rule, in one place: revisions move forward; what counts as the same version;
what is a rollback.

A ``revision`` is the monotonic counter a source puts on its answer (a manifest's ``revision``,
MLflow's ``pointercache.revision`` tag or its stand-in). Every component that compares
revisions asks this module: the sidecar before it flips, the init container against the
persisted LKGs, the node LKG and the cluster LKG before they are overwritten, and the sidecar
when a registry confirms what it serves. Writers that change a registry (``pointercache
publish``) take the next revision from ``raised``.
"""

from __future__ import annotations

from collections.abc import Iterable

from pointercache.base.redact import redact_uri
from pointercache.model.candidate import Candidate
from pointercache.model.pointer import Pointer


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


def is_stale(offered: int, served: int) -> bool:
    """A running sidecar refuses an answer whose revision is below the one it serves."""
    return offered < served


def below_persisted(offered: int, persisted: int) -> bool:
    """A starting pod refuses a registry answer below what its node or cluster LKG holds.

    An answer without a revision (0) is not compared: the source has no counter.
    """
    return 0 < offered < persisted


def carried_forward(served: int, confirmed: int) -> int:
    """The revision of a served version that a registry confirmed at ``confirmed``.

    It moves forward with the registry even when the version does not (A at 5, then A again at
    8): otherwise a lagging answer at 6 would later look newer than what is served.
    """
    return max(served, confirmed)


def may_replace(stored: Pointer, offered: Pointer, *, same_digest_refresh: bool) -> bool:
    """Whether an LKG holding ``stored`` may be overwritten with ``offered``.

    The revision never goes down. ``same_digest_refresh`` (the node LKG) also lets a lower
    revision through when the bytes are the same (a provenance refresh); the cluster LKG,
    shared by every node, keeps the highest revision it has seen.
    """
    if offered.revision >= stored.revision:
        return True
    return same_digest_refresh and offered.digest == stored.digest


def raised(previous: int | None, now_ms: int | None = None) -> int:
    """The revision a writer sets with a change: always above ``previous`` (None: no revision
    yet). With ``now_ms`` (MLflow, whose stand-in revision is the epoch ms an answer was first
    seen) it is at least that, so a registry tag and the stand-in keep moving the same way.
    """
    floor = 0 if previous is None else previous + 1
    return floor if now_ms is None else max(floor, now_ms)


def is_rollback(previous: Pointer, new: Pointer, served_before: Iterable[str]) -> bool:
    """A move back to a version served earlier, or to a numerically lower version."""
    if previous.version.isdigit() and new.version.isdigit():
        return int(new.version) < int(previous.version)
    return new.version in set(served_before)
