"""The resolution chain: registries in order → node LKG → cluster LKG → pinned.

``Chain.candidates`` yields one ``Resolution`` per step that has an answer, in order; the caller
stages the first one it can and stops. Each resolution carries the ``Attempt``s before it, so the
pointer and ``/status`` can say which step answered and why the earlier ones did not. A caller
that turns an answer down says why with ``refuse``: the reason is recorded against that answer's
own attempt (never against another registry of the same step), and the pointer of a later
fallback repeats it.

LKG steps read the entry of the pod's own model **and selector** (``volume.lkg``).

Each registry is bounded by its own timeout (``SourceOptions.timeout`` of the source, else the
chain's ``timeout``): the call runs as a task that is abandoned (cancelled, not awaited) when the
time is up, so a source that hangs, even one that ignores cancellation, delays resolution by its
timeout and no more. Reasons are redacted before they are recorded.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pointercache.base.clock import utcnow
from pointercache.base.log import log
from pointercache.base.redact import redact_text
from pointercache.errors import InvalidPointer, NotFound
from pointercache.model.candidate import Candidate, Selector
from pointercache.model.pointer import Pointer, SourceKind
from pointercache.model.revision import Claim
from pointercache.resolve.sources import Source, SourceOptions
from pointercache.volume import layout
from pointercache.volume.lkg import read_mounted

if TYPE_CHECKING:
    from pathlib import Path

    from pointercache.volume.lkg import NodeLKG

_Loader = Callable[[], Pointer | Candidate | None]


@dataclass(frozen=True, slots=True)
class Attempt:
    """One step of the chain and what came of it."""

    step: str
    """``registry``, ``lkg-node``, ``lkg-cluster`` or ``pinned``."""
    name: str
    """Which registry or file (redacted)."""
    ok: bool
    """True if the step produced a candidate (that the caller has not yet turned down)."""
    reason: str
    """Why it did not (redacted), or what it answered."""
    not_found: bool = False
    """The registry answered that the model, alias, version or stage does not exist."""


@dataclass(frozen=True, slots=True)
class Resolution:
    """A candidate and the provenance it will carry into the pointer."""

    candidate: Candidate
    source: SourceKind
    """Which step answered."""
    detail: str
    """Which registry answered, or why the chain fell back."""
    registry_seen_at: str | None
    """When a registry confirmed this version (now, for a registry answer)."""
    attempts: tuple[Attempt, ...]
    """The steps tried before this one."""
    index: int = -1
    """Where this answer's own attempt is in the caller's record (for ``refuse``)."""
    claim: Claim | None = None
    """The registry claim the version holds once published (``model.revision``): the answering
    registry's for a registry answer, the one the cluster LKG recorded for an ``lkg-cluster``
    answer; None from the node LKG (a node-local file) or the pinned version."""


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return redact_text(f"{type(exc).__name__}: {text}")


class Chain:
    """Resolves a model through registries, node LKG, cluster LKG and the pinned fallback."""

    def __init__(
        self,
        *,
        sources: Sequence[Source],
        lkg: NodeLKG | None,
        cluster_lkg_dir: Path | None,
        pinned: Candidate | None,
        timeout: float = 0.5,
    ) -> None:
        self.sources = list(sources)
        self.lkg = lkg
        self.cluster_lkg_dir = cluster_lkg_dir
        self.pinned = pinned
        self.timeout = timeout
        self._abandoned: set[asyncio.Task[Candidate]] = set()

    def timeout_of(self, source: Source) -> float:
        """The source's own ``SourceOptions.timeout`` if it has options, else the chain's."""
        for attr in ("options", "_options"):
            options = getattr(source, attr, None)
            if isinstance(options, SourceOptions):
                return options.timeout
        return self.timeout

    async def _ask(self, source: Source, model: str, selector: Selector) -> Candidate:
        limit = self.timeout_of(source)
        task = asyncio.create_task(source.resolve(model, selector))
        done, _pending = await asyncio.wait({task}, timeout=limit)
        if not done:
            task.cancel()
            self._abandoned.add(task)
            task.add_done_callback(self._forget)
            raise TimeoutError(f"no answer within {limit:g}s")
        return task.result()

    def _forget(self, task: asyncio.Task[Candidate]) -> None:
        self._abandoned.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved, so asyncio does not warn about it

    async def from_registries(
        self, model: str, selector: Selector
    ) -> tuple[Resolution | None, list[Attempt]]:
        """Ask each registry in order; the first answer wins. Returns it and all attempts."""
        attempts: list[Attempt] = []
        for source in self.sources:
            try:
                candidate = _same_model(await self._ask(source, model, selector), model)
            except Exception as exc:
                missing = isinstance(exc, NotFound)
                attempt = Attempt("registry", source.name, False, _reason(exc), not_found=missing)
                attempts.append(attempt)
                log.warning("registry-failed", registry=source.name, error=_reason(exc))
                continue
            attempts.append(
                Attempt("registry", source.name, ok=True, reason=f"version {candidate.version}")
            )
            resolution = Resolution(
                candidate=candidate,
                source="registry",
                detail=source.name,
                registry_seen_at=utcnow(),
                attempts=tuple(attempts[:-1]),
                index=len(attempts) - 1,
                claim=Claim.of(candidate),
            )
            return resolution, attempts
        if not self.sources:
            attempts.append(Attempt("registry", "-", ok=False, reason="no registry configured"))
        return None, attempts

    async def candidates(
        self, model: str, selector: Selector, record: list[Attempt] | None = None
    ) -> AsyncIterator[Resolution]:
        """Yield a resolution per step with an answer: registry, lkg-node, lkg-cluster, pinned.

        ``record``, when given, receives every attempt as it is made, so a caller for whom no
        step answered can still say why each one did not.
        """
        attempts = record if record is not None else []
        async for resolution in self._candidates(model, selector, attempts):
            yield resolution
            if attempts[resolution.index].ok:  # the caller moved on without saying why
                attempts[resolution.index] = _not_used(attempts[resolution.index])

    @staticmethod
    def refuse(record: list[Attempt], resolution: Resolution, reason: str) -> None:
        """Record why the caller turned ``resolution`` down, against its own attempt.

        Call it before asking for the next step: the pointer of a later fallback names the
        reason (``source_detail``), and so does the one-line failure of an init container.
        """
        answered = record[resolution.index]
        record[resolution.index] = Attempt(answered.step, answered.name, ok=False, reason=reason)

    async def _candidates(
        self, model: str, selector: Selector, attempts: list[Attempt]
    ) -> AsyncIterator[Resolution]:
        found, asked = await self.from_registries(model, selector)
        attempts.extend(asked)
        if found is not None:
            yield found
        else:
            log.warning("registries-unavailable", model=model, attempts=len(attempts))
        for step, name, loader in self._fallbacks(model, selector):
            try:
                pointer = loader()
            except Exception as exc:
                attempts.append(Attempt(step, name, ok=False, reason=_reason(exc)))
                continue
            if pointer is None:
                attempts.append(Attempt(step, name, ok=False, reason="nothing stored"))
                continue
            candidate = pointer if isinstance(pointer, Candidate) else _candidate(pointer, name)
            seen = None if isinstance(pointer, Candidate) else pointer.registry_seen_at
            claim = None
            if step == "lkg-cluster" and isinstance(pointer, Pointer):
                claim = Claim.recorded(pointer)
            resolution = Resolution(
                candidate=candidate,
                source=step,  # type: ignore[arg-type]
                detail=_fallback_detail(step, name, attempts),
                registry_seen_at=seen,
                attempts=tuple(attempts),
                index=len(attempts),
                claim=claim,
            )
            attempts.append(Attempt(step, name, ok=True, reason=f"version {candidate.version}"))
            yield resolution

    def _fallbacks(self, model: str, selector: Selector) -> list[tuple[str, str, _Loader]]:
        steps: list[tuple[str, str, _Loader]] = []
        if self.lkg is not None:
            lkg = self.lkg
            path = str(lkg.pointer_path(model, selector))
            steps.append(("lkg-node", path, lambda: lkg.read(model, selector)))
        if self.cluster_lkg_dir is not None:
            directory = self.cluster_lkg_dir
            path = str(directory / layout.lkg_entry(model, selector))
            steps.append(("lkg-cluster", path, lambda: read_mounted(directory, model, selector)))
        if self.pinned is not None:
            pinned = self.pinned
            steps.append(("pinned", "pinned", lambda: _check_pinned(pinned, model)))
        return steps


def _not_used(answered: Attempt) -> Attempt:
    """The caller asked for the next step: the answer of ``answered`` could not be staged."""
    reason = f"{answered.reason} answered, not staged"
    return Attempt(answered.step, answered.name, ok=False, reason=reason)


def _same_model(candidate: Candidate, model: str) -> Candidate:
    if candidate.model != model:
        raise InvalidPointer(f"answered for model {candidate.model!r}, not {model!r}")
    return candidate


def _check_pinned(pinned: Candidate, model: str) -> Candidate:
    if pinned.model != model:
        raise InvalidPointer(f"pinned model is {pinned.model!r}, not {model!r}")
    return pinned


def _candidate(pointer: Pointer, name: str) -> Candidate:
    return Candidate(
        model=pointer.model,
        version=pointer.version,
        uri=pointer.uri,
        digest=pointer.digest,
        size_bytes=pointer.size_bytes,
        revision=pointer.revision,
        signature=pointer.signature,
        registry=name,
    )


def _fallback_detail(step: str, name: str, attempts: Sequence[Attempt]) -> str:
    notes = [f"{a.name}: {a.reason}" for a in attempts]
    why = "; ".join(notes) if notes else "no earlier step"
    where = step if name == step else f"{step} {name}"
    return f"{where} (fell back: {why})"
