"""Walk the whole chain once: resolve → fetch → verify → publish (the init container's one shot,
and the sidecar's start when nothing is published yet), within a deadline for init.

Each step of the chain is tried in order; a candidate whose artifact cannot be fetched, verified
or admitted by the signature gate falls through to the next step. Nothing is published unless a
complete, verified version is installed, so a failed init leaves no pointer behind.
"""

from __future__ import annotations

import asyncio

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
from pointercache.model.revision import below_persisted
from pointercache.resolve.chain import Attempt
from pointercache.sync.pipeline import Publisher
from pointercache.sync.wiring import Parts
from pointercache.volume.lkg import read_mounted

_FALL_THROUGH = (FetchError, IntegrityError, SignatureMismatch, StoreError)


def summarize(model: str, attempts: list[Attempt]) -> str:
    """One line naming every step that was tried and why it did not answer."""
    steps = "; ".join(f"{a.step} {a.name}: {a.reason}".replace("  ", " ") for a in attempts)
    return f"no servable model for {model!r}: {steps or 'no step configured'}"


async def resolve_and_publish(parts: Parts) -> Pointer:
    """Publish the first servable candidate of the chain; ``ResolutionFailed`` if none."""
    target = parts.target
    publisher = Publisher.for_parts(parts)
    attempts: list[Attempt] = []
    rejected: dict[str, str] = {}
    persisted = persisted_revision(parts)
    async for resolution in parts.chain.candidates(target.model, target.selector, attempts):
        revision = resolution.candidate.revision
        if resolution.source == "registry" and below_persisted(revision, persisted):
            reason = f"stale answer: revision {revision} is below the persisted {persisted}"
            log.warning("stale-answer", registry=resolution.detail, reason=reason)
            rejected[resolution.source] = reason
            continue
        try:
            adopted = await publisher.adopt(resolution)
        except _FALL_THROUGH as exc:
            reason = f"version {resolution.candidate.version} rejected: {_reason(exc)}"
            log.warning("candidate-rejected", source=resolution.source, reason=reason)
            rejected[resolution.source] = reason
            continue
        return adopted.pointer
    final = [Attempt(a.step, a.name, a.ok, rejected.get(a.step, a.reason)) for a in attempts]
    raise ResolutionFailed(summarize(target.model, final), final)


def persisted_revision(parts: Parts) -> int:
    """The highest revision an LKG (node or cluster) holds for the model; 0 if none.

    A registry answer below it comes from a lagging replica or a stale cache: it must not pull
    a new pod back to an older version than its node or cluster already moved to.
    """
    model = parts.target.model
    pointers = [parts.lkg.read(model) if parts.lkg else None]
    if parts.cluster_lkg_dir is not None:
        try:
            pointers.append(read_mounted(parts.cluster_lkg_dir, model))
        except (InvalidPointer, OSError) as exc:
            log.warning("lkg-cluster-unreadable", model=model, error=exc)
    return max((p.revision for p in pointers if p is not None), default=0)


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
