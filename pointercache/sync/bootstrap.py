"""The init container's one shot: resolve → fetch → verify → publish, within a deadline.

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
    PointercacheError,
    ResolutionFailed,
    SignatureMismatch,
    StoreError,
)
from pointercache.model.pointer import Pointer
from pointercache.resolve.chain import Attempt
from pointercache.sync.pipeline import Publisher
from pointercache.sync.wiring import Parts

_FALL_THROUGH = (FetchError, IntegrityError, SignatureMismatch, StoreError)


def summarize(model: str, attempts: list[Attempt]) -> str:
    """One line naming every step that was tried and why it did not answer."""
    steps = "; ".join(f"{a.step} {a.name}: {a.reason}".replace("  ", " ") for a in attempts)
    return f"no servable model for {model!r}: {steps or 'no step configured'}"


async def resolve_and_publish(parts: Parts) -> Pointer:
    """Publish the first servable candidate of the chain; ``ResolutionFailed`` if none."""
    settings = parts.settings
    publisher = Publisher.for_parts(parts)
    attempts: list[Attempt] = []
    rejected: dict[str, str] = {}
    selector = settings.parsed_selector
    persisted = persisted_revision(parts)
    async for resolution in parts.chain.candidates(settings.model, selector, attempts):
        revision = resolution.candidate.revision
        if resolution.source == "registry" and 0 < revision < persisted:
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
    raise ResolutionFailed(summarize(settings.model, final), final)


def persisted_revision(parts: Parts) -> int:
    """The highest revision an LKG (node or cluster) holds for the model; 0 if none.

    A registry answer below it comes from a lagging replica or a stale cache: it must not pull
    a new pod back to an older version than its node or cluster already moved to.
    """
    model = parts.settings.model
    pointers = [parts.lkg.read(model) if parts.lkg else None]
    if parts.settings.lkg_cluster_dir is not None:
        from pointercache.cluster.lkg import read_mounted

        pointers.append(read_mounted(parts.settings.lkg_cluster_dir, model))
    return max((p.revision for p in pointers if p is not None), default=0)


def _reason(exc: PointercacheError) -> str:
    if isinstance(exc, SignatureMismatch):
        return str(exc)  # already the diff in words: "missing geo_lat; type amount: ..."
    return f"{type(exc).__name__}: {exc}"


async def run(parts: Parts) -> Pointer:
    """Lock the volume, recover leftovers, and publish within ``--deadline`` seconds."""
    settings = parts.settings
    store = parts.store
    await asyncio.to_thread(store.ensure_layout)
    try:
        async with asyncio.timeout(settings.deadline):
            with store.lock(timeout=settings.deadline):
                await asyncio.to_thread(store.recover)  # logs what it removed
                return await resolve_and_publish(parts)
    except TimeoutError:
        raise ResolutionFailed(
            f"deadline of {settings.deadline:g}s passed before a model was published"
        ) from None
    finally:
        await parts.aclose()
