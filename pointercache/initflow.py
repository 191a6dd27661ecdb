"""The init container's one shot: resolve → fetch → verify → publish, within a deadline.

Each step of the chain is tried in order; a candidate whose artifact cannot be fetched, verified
or admitted by the signature gate falls through to the next step. Nothing is published unless a
complete, verified version is installed, so a failed init leaves no pointer behind.
"""

from __future__ import annotations

import asyncio

from pointercache.errors import (
    FetchError,
    IntegrityError,
    PointercacheError,
    ResolutionFailed,
    SignatureMismatch,
    StoreError,
)
from pointercache.log import log
from pointercache.pipeline import Publisher
from pointercache.pointer import Pointer
from pointercache.resolve import Attempt
from pointercache.wiring import Parts

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
    async for resolution in parts.chain.candidates(settings.model, selector, attempts):
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


def _reason(exc: PointercacheError) -> str:
    if isinstance(exc, SignatureMismatch) and exc.diff:
        return f"{exc} {exc.diff}"
    return f"{type(exc).__name__}: {exc}"


async def run(parts: Parts) -> Pointer:
    """Lock the volume, recover leftovers, and publish within ``--deadline`` seconds."""
    settings = parts.settings
    store = parts.store
    await asyncio.to_thread(store.ensure_layout)
    try:
        async with asyncio.timeout(settings.deadline):
            with store.lock(timeout=settings.deadline):
                removed = await asyncio.to_thread(store.recover)
                if removed:
                    log.info("recovered", removed=len(removed))
                return await resolve_and_publish(parts)
    except TimeoutError:
        raise ResolutionFailed(
            f"deadline of {settings.deadline:g}s passed before a model was published"
        ) from None
    finally:
        await parts.aclose()
