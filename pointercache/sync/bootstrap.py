"""Walk the whole chain once: resolve → fetch → verify → publish (the init container's one shot,
and the sidecar's start when nothing is published yet), within a deadline for init.

Each step of the chain is tried in order. Any failure inside one candidate — a download that
stalls or breaks, bytes that do not verify, the signature gate, a full disk, a malformed URI, an
archive that breaks the rules, even an unexpected error — falls through to the next step with a
one-line reason (recorded in the attempts, so later steps' ``source_detail`` and the final
failure name it); only a ``ConfigError`` stops the walk. With a ``Budget`` (init), each candidate
gets its share of the deadline (``sync.budget``). Nothing is published unless a complete,
verified version is installed, so a failed init leaves no pointer behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import traceback
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace

from pointercache.base.log import log
from pointercache.base.redact import redact_text
from pointercache.errors import ConfigError, PointercacheError, ResolutionFailed, SignatureMismatch
from pointercache.model.pointer import Pointer
from pointercache.model.revision import Claim, held_by, is_stale
from pointercache.resolve.chain import Attempt, Chain, LocalAnswer, Resolution
from pointercache.stage.prestage import CACHE_LOCK_WAIT
from pointercache.stage.progress import TransferWatch
from pointercache.sync.budget import Budget
from pointercache.sync.pipeline import Publisher
from pointercache.sync.wiring import Parts

CLOSE_WAIT = 0.25
"""Seconds given to closing the sources (connections, watches) at the end of a one shot."""
SETTLE_MARGIN = 0.1
"""Seconds before the deadline at which the work after a flip (node LKG, gc) is left behind."""


def summarize(model: str, attempts: Sequence[Attempt]) -> str:
    """One line naming every step that was tried and why it did not answer."""
    steps = "; ".join(f"{a.step} {a.name}: {a.reason}".replace("  ", " ") for a in attempts)
    return f"no servable model for {model!r}: {steps or 'no step configured'}"


async def resolve_and_publish(
    parts: Parts, *, budget: Budget | None = None, attempts: list[Attempt] | None = None
) -> Pointer:
    """Publish the first servable candidate of the chain; ``ResolutionFailed`` if none.

    ``budget`` (init) bounds the registries and each candidate (``sync.budget``); ``attempts``,
    when given, receives every step and its outcome as they happen (so a caller whose deadline
    passed can still say what was tried).

    A registry answer below the revision the cluster LKG holds for this selector from the same
    registry is refused (``model.revision``): a lagging replica must not start a pod on an
    older version than the fleet moved to. The node LKG is never held against a registry. A
    fallback that names the cluster LKG's version keeps holding the cluster's claim, so the
    sidecar goes on refusing the lagging answer (within its grace period).
    """
    target, chain = parts.target, parts.chain
    attempts = [] if attempts is None else attempts
    publisher = Publisher.for_parts(parts)
    local = await chain.fallback_answers(target.model, target.selector)
    answers = [a for a in local if a.answer is not None]
    fleet = cluster_entry(local)
    held = held_by("lkg-cluster", fleet)
    within = budget.share(len(answers)) if budget else None
    found, asked = await chain.from_registries(target.model, target.selector, within=within)
    attempts.extend(asked)
    if found is not None:
        found = _noting_skipped(found, local)
        pointer = await _try_registry(
            publisher, found, held=held, attempts=attempts, budget=budget, later=len(answers)
        )
        if pointer is not None:
            return pointer
    else:
        log.warning("registries-unavailable", model=target.model, attempts=len(attempts))
    for index, answer in enumerate(local):
        resolution = chain.fallback_resolution(answer, attempts)
        if resolution is None:
            continue
        resolution = _with_fleet_claim(resolution, fleet, held)
        later = sum(1 for a in local[index + 1 :] if a.answer is not None)
        reason = await _try(publisher, resolution, budget, later)
        if isinstance(reason, Pointer):
            return reason
        attempts.append(Attempt(answer.step, answer.name, ok=False, reason=reason))
    raise ResolutionFailed(summarize(target.model, attempts), attempts)


def cluster_entry(local: Sequence[LocalAnswer]) -> Pointer | None:
    """The cluster LKG pointer of the pod's model and selector among the local answers, if any
    (an unreadable entry was already recorded as the step's reason, and counts as none)."""
    for answer in local:
        if answer.step == "lkg-cluster" and isinstance(answer.answer, Pointer):
            return answer.answer
    return None


def _with_fleet_claim(
    resolution: Resolution, fleet: Pointer | None, held: Claim | None
) -> Resolution:
    """A fallback naming the cluster LKG's version and bytes holds the cluster's claim."""
    cand = resolution.candidate
    if resolution.source == "registry" or fleet is None or held is None:
        return resolution
    if (cand.version, cand.digest) != (fleet.version, fleet.digest):
        return resolution
    return replace(resolution, claim=held)


async def _try_registry(
    publisher: Publisher,
    found: Resolution,
    *,
    held: Claim | None,
    attempts: list[Attempt],
    budget: Budget | None,
    later: int,
) -> Pointer | None:
    """Stage the registry's answer unless the same registry claimed a higher revision in the
    cluster LKG; record why not against the answer's own attempt."""
    offered = found.claim
    if offered is not None and held is not None and is_stale(offered, held):
        reason = (
            f"version {found.candidate.version} refused: {offered.registry} answered"
            f" revision {offered.revision}, below the revision {held.revision} it claimed"
            " before (cluster LKG)"
        )
        log.warning("stale-answer", registry=found.detail, reason=reason)
    else:
        outcome = await _try(publisher, found, budget, later)
        if isinstance(outcome, Pointer):
            return outcome
        reason = outcome
    Chain.refuse(attempts, found, reason)
    return None


async def _try(
    publisher: Publisher, resolution: Resolution, budget: Budget | None, later: int
) -> Pointer | str:
    """Publish ``resolution``, preparing it within its share of ``budget`` (``later`` steps
    after it have an answer); the pointer, or why not."""
    version = resolution.candidate.version
    watch = TransferWatch()
    seconds = budget.share(later) if budget else None
    lock_wait = CACHE_LOCK_WAIT if seconds is None else min(CACHE_LOCK_WAIT, seconds / 2)
    try:
        async with asyncio.timeout(seconds) as window:
            prepared = await publisher.prepare(resolution, progress=watch, lock_wait=lock_wait)
        settle = None if budget is None else max(budget.left() - SETTLE_MARGIN, 0.0)
        adopted = await publisher.commit(prepared, settle_within=settle)
    except TimeoutError:
        if not window.expired():
            return _rejected(resolution, version, TimeoutError("timed out"))
        reason = (
            f"version {version} abandoned after {seconds:.1f}s, its share of the deadline "
            f"({watch.summary()})"
        )
        log.warning("candidate-abandoned", source=resolution.source, reason=reason)
        return reason
    except ConfigError:
        raise
    except Exception as exc:  # any failure inside one candidate falls through
        return _rejected(resolution, version, exc)
    return adopted.pointer


def _rejected(resolution: Resolution, version: str, exc: BaseException) -> str:
    reason = redact_text(f"version {version} rejected: {_reason(exc)}")
    if isinstance(exc, PointercacheError):
        log.warning("candidate-rejected", source=resolution.source, reason=reason)
    else:  # not one of ours: say where, for a bug report, without a traceback
        frame = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
        where = f"{frame[0].filename.rsplit('/', 1)[-1]}:{frame[0].lineno}" if frame else "?"
        log.error("candidate-crashed", source=resolution.source, reason=reason, where=where)
    return reason


def _reason(exc: BaseException) -> str:
    if isinstance(exc, SignatureMismatch):
        return str(exc)  # already the diff in words: "missing geo_lat; type amount: ..."
    text = " ".join(str(exc).split()) or "no detail"
    return f"{type(exc).__name__}: {text}"


def _noting_skipped(found: Resolution, local: list[LocalAnswer]) -> Resolution:
    """The registry answer, its detail noting local steps that were skipped as unreadable."""
    skipped = [f"{a.step} skipped: {a.reason}" for a in local if a.answer is None and a.reason]
    skipped = [s for s in skipped if not s.endswith("nothing stored")]
    if not skipped:
        return found
    return replace(found, detail=f"{found.detail} ({'; '.join(skipped)})")


@contextlib.asynccontextmanager
async def _volume_lock(parts: Parts, budget: Budget) -> AsyncIterator[None]:
    """Hold the shared volume's single-writer lock, waited for in a thread (never on the loop)."""
    held = parts.store.lock(timeout=budget.left())
    await asyncio.to_thread(held.__enter__)
    try:
        yield
    finally:
        held.__exit__(None, None, None)


async def run_once(parts: Parts, *, deadline: float, budget: Budget | None = None) -> Pointer:
    """Lock the volume, recover leftovers, and publish within ``deadline`` seconds (init).

    ``ResolutionFailed`` when nothing could be published, naming every step tried (also when
    the deadline passed first).
    """
    budget = budget or Budget(deadline)
    store = parts.store
    attempts: list[Attempt] = []
    try:
        async with asyncio.timeout(budget.left()):
            await asyncio.to_thread(store.ensure_layout)
            async with _volume_lock(parts, budget):
                await asyncio.to_thread(store.recover)  # logs what it removed
                return await resolve_and_publish(parts, budget=budget, attempts=attempts)
    except TimeoutError:
        tried = summarize(parts.target.model, attempts) if attempts else "nothing was tried"
        raise ResolutionFailed(
            f"deadline of {deadline:g}s passed before a model was published; {tried}", attempts
        ) from None
    finally:
        await close(parts)


async def close(parts: Parts) -> None:
    """Close every source within ``CLOSE_WAIT`` seconds (a hung close is left behind)."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(parts.aclose(), CLOSE_WAIT)
