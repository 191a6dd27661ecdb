"""Walk the whole chain once: resolve → fetch → verify → publish (the init container's one shot,
and the sidecar's start when nothing is published yet), within a deadline for init.

Each step of the chain is tried in order; a candidate whose artifact cannot be fetched, verified
or admitted by the signature gate falls through to the next step. Nothing is published unless a
complete, verified version is installed, so a failed init leaves no pointer behind.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

from pointercache.base.log import log
from pointercache.errors import (
    FetchError,
    IntegrityError,
    InvalidPointer,
    PointercacheError,
    ResolutionFailed,
    SignatureMismatch,
    StoreError,
)
from pointercache.model.pointer import Pointer
from pointercache.model.revision import Claim, held_by, is_stale
from pointercache.resolve.chain import Attempt, Chain, Resolution
from pointercache.sync.pipeline import Publisher
from pointercache.sync.wiring import Parts
from pointercache.volume.lkg import read_mounted

_FALL_THROUGH = (FetchError, IntegrityError, SignatureMismatch, StoreError)


def summarize(model: str, attempts: list[Attempt]) -> str:
    """One line naming every step that was tried and why it did not answer."""
    steps = "; ".join(f"{a.step} {a.name}: {a.reason}".replace("  ", " ") for a in attempts)
    return f"no servable model for {model!r}: {steps or 'no step configured'}"


async def resolve_and_publish(parts: Parts) -> Pointer:
    """Publish the first servable candidate of the chain; ``ResolutionFailed`` if none.

    A registry answer below the revision the cluster LKG holds for this selector from the same
    registry is refused (``model.revision``): a lagging replica must not start a pod on an
    older version than the fleet moved to. The node LKG is never held against a registry. A
    fallback that names the cluster LKG's version keeps holding the cluster's claim, so the
    sidecar goes on refusing the lagging answer (within its grace period).
    """
    target = parts.target
    publisher = Publisher.for_parts(parts)
    attempts: list[Attempt] = []
    fleet = cluster_entry(parts)
    held = held_by("lkg-cluster", fleet)
    async for found in parts.chain.candidates(target.model, target.selector, attempts):
        resolution = _with_fleet_claim(found, fleet, held)
        offered = resolution.claim
        if resolution.source == "registry" and offered is not None and is_stale(offered, held):
            assert held is not None  # is_stale is False without a held claim
            reason = (
                f"version {resolution.candidate.version} refused: {offered.registry} answered"
                f" revision {offered.revision}, below the revision {held.revision} it claimed"
                " before (cluster LKG)"
            )
            log.warning("stale-answer", registry=resolution.detail, reason=reason)
            Chain.refuse(attempts, resolution, reason)
            continue
        try:
            return (await publisher.adopt(resolution)).pointer
        except _FALL_THROUGH as exc:
            reason = f"version {resolution.candidate.version} rejected: {_reason(exc)}"
            log.warning("candidate-rejected", source=resolution.source, reason=reason)
            Chain.refuse(attempts, resolution, reason)
            continue
    raise ResolutionFailed(summarize(target.model, attempts), list(attempts))


def cluster_entry(parts: Parts) -> Pointer | None:
    """The mounted cluster LKG pointer of the pod's model and selector, if any.

    An unreadable entry counts as none (logged).
    """
    if parts.cluster_lkg_dir is None:
        return None
    target = parts.target
    try:
        return read_mounted(parts.cluster_lkg_dir, target.model, target.selector)
    except (InvalidPointer, OSError) as exc:
        log.warning("lkg-cluster-unreadable", model=target.model, error=exc)
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


def _reason(exc: PointercacheError) -> str:
    if isinstance(exc, SignatureMismatch):
        return str(exc)  # already the diff in words: "missing geo_lat; type amount: ..."
    return f"{type(exc).__name__}: {exc}"


async def run_once(parts: Parts, *, deadline: float) -> Pointer:
    """Lock the volume, recover leftovers, and publish within ``deadline`` seconds (init)."""
    store = parts.store
    await asyncio.to_thread(store.ensure_layout)
    try:
        async with asyncio.timeout(deadline):
            with store.lock(timeout=deadline):
                await asyncio.to_thread(store.recover)  # logs what it removed
                return await resolve_and_publish(parts)
    except TimeoutError:
        raise ResolutionFailed(
            f"deadline of {deadline:g}s passed before a model was published"
        ) from None
    finally:
        await parts.aclose()
