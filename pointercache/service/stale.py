"""The sidecar's side of the revision rule: which claim it holds, and refusing stale answers
visibly and for a bounded time (``model.revision`` decides; this module keeps the clock).

An answer below the claim the served version holds from the same registry is refused: recorded
once in ``RefreshState.refused`` (``/status``), logged at warning, reported as a ``StaleAnswer``
Event. If the registry keeps giving exactly that answer for ``grace`` seconds, measured on this
process's monotonic clock, it is accepted (``Verdict.RESET``): a registry whose counter went back
(restored from a backup, or one bogus answer at 2**63-1) cannot pin a pod for good.
"""

from __future__ import annotations

import enum
import time
from typing import TYPE_CHECKING

from pointercache.base.clock import utcnow
from pointercache.errors import PointercacheError
from pointercache.model.revision import Claim, grace_over, held_by, is_stale
from pointercache.service.state import RefusedAnswer

if TYPE_CHECKING:
    from pointercache.model.pointer import Pointer
    from pointercache.resolve.chain import Resolution
    from pointercache.service.state import RefreshState
    from pointercache.volume.store import Store


class Verdict(enum.Enum):
    """What to do with an answer that names another version than the served one."""

    TAKE = "take"
    """Not stale: flip to it."""
    REFUSE_NEW = "refuse-new"
    """Stale, refused for the first time: record and report it."""
    REFUSE = "refuse"
    """Stale, refused before and still within the grace period."""
    RESET = "reset"
    """Stale, but the registry kept giving it for the whole grace period: flip to it."""


def held_claim(store: Store, current: Pointer | None) -> Claim | None:
    """The claim the published version holds: recorded beside it (``claim.json``) by the pod
    that published it, else what its pointer records; nothing for the node LKG or pinned."""
    if current is None or current.source in ("lkg-node", "pinned"):
        return None  # a value from a file never overrides a registry that answers
    try:
        version_dir = store.current_dir()
    except PointercacheError:
        version_dir = None
    recorded = store.read_claim(version_dir) if version_dir is not None else None
    return held_by("served", current, recorded)


def judge(state: RefreshState, resolution: Resolution, offered: Claim, grace: float) -> Verdict:
    """Decide on ``resolution`` against the claim ``state`` holds; keeps ``state.refused``."""
    held = state.claim
    if held is None or not is_stale(offered, held):
        state.refused = None
        return Verdict.TAKE
    cand = resolution.candidate
    refused = state.refused
    if refused is not None and refused.same_answer(offered.registry, cand.version, cand.revision):
        return Verdict.REFUSE if not grace_over(refused.refused_for(), grace) else Verdict.RESET
    state.refused = RefusedAnswer(
        registry=offered.registry,
        version=cand.version,
        revision=cand.revision,
        served_revision=held.revision,
        since=utcnow(),
        since_monotonic=time.monotonic(),
        grace=grace,
    )
    return Verdict.REFUSE_NEW if not grace_over(0.0, grace) else Verdict.RESET


def refused_message(refused: RefusedAnswer) -> str:
    """The Event message of a newly refused answer."""
    return (
        f"{refused.registry} answered version {refused.version} at revision {refused.revision},"
        f" below the revision {refused.served_revision} it claimed for the served version;"
        f" refused for up to {refused.grace:g}s"
    )


def reset_message(registry: str, pointer: Pointer, grace: float) -> str:
    """The Event message of an answer accepted after the grace period."""
    return (
        f"{registry} kept answering revision {pointer.revision} for {grace:g}s; accepted,"
        f" now serving {pointer.version}"
    )
