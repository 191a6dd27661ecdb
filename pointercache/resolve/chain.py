"""The resolution chain: registries in order → node LKG → cluster LKG → pinned.

``Chain.candidates`` yields one ``Resolution`` per step that has an answer, in order; the caller
stages the first one it can and stops. Each resolution carries the ``Attempt``s before it, so the
pointer and ``/status`` can say which step answered and why the earlier ones did not. A caller
that turns an answer down says why with ``refuse``: the reason is recorded against that answer's
own attempt (never against another registry of the same step), and the pointer of a later
fallback repeats it.

LKG steps read the entry of the pod's own model **and selector** (``volume.lkg``).

Each registry is bounded by its own timeout (``SourceOptions.timeout`` of the source, else the
chain's ``timeout``), and all of them together by ``within`` when the caller gives one (the init
container's share of its deadline): the call runs as a task that is abandoned (cancelled, not
awaited) when the time is up, so a source that hangs, even one that ignores cancellation, delays
resolution by its timeout and no more. Reasons are redacted before they are recorded.

The local steps (node LKG, cluster LKG, pinned) are read by ``fallback_answers`` in a worker
thread, each within ``LOCAL_READ_TIMEOUT`` (the node directory is untrusted and may sit on a slow
disk): a damaged, planted or unreadable file is a step with a reason, never an exception.
``candidates`` strings both together for callers that take the answers one by one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

from pointercache.base.blocking import abandon_after
from pointercache.base.clock import utcnow
from pointercache.base.log import log
from pointercache.base.redact import redact_text
from pointercache.errors import InvalidPointer, NotFound
from pointercache.model.candidate import Candidate, Selector
from pointercache.model.pointer import Pointer, SourceKind
from pointercache.model.revision import Claim
from pointercache.resolve.sources import Source, SourceOptions
from pointercache.volume import layout
from pointercache.volume.lkg import read_entry_from

if TYPE_CHECKING:
    from pathlib import Path

    from pointercache.volume.lkg import NodeLKG

_Loader = Callable[[], tuple[Pointer | Candidate | None, str]]
"""Reads a local step: its answer and the name of what it read (a legacy LKG entry, say)."""

LOCAL_READ_TIMEOUT = 2.0
"""Seconds one local step (a node or cluster LKG file) may take to read before it is skipped."""


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


@dataclass(frozen=True, slots=True)
class LocalAnswer:
    """What one local step (node LKG, cluster LKG, pinned) holds, read once."""

    step: str
    """``lkg-node``, ``lkg-cluster`` or ``pinned``."""
    name: str
    """The file it came from, or ``pinned``."""
    answer: Pointer | Candidate | None
    """The stored pointer or the pinned candidate; None when the step has none."""
    reason: str
    """Why there is no answer ("nothing stored", the redacted error), or "" when there is."""


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

    async def _ask(
        self, source: Source, model: str, selector: Selector, left: float | None = None
    ) -> Candidate:
        limit = self.timeout_of(source) if left is None else min(self.timeout_of(source), left)
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
        self, model: str, selector: Selector, *, within: float | None = None
    ) -> tuple[Resolution | None, list[Attempt]]:
        """Ask each registry in order; the first answer wins. Returns it and all attempts.

        ``within`` bounds all the registries together (seconds; None: only each one's own
        timeout): a registry asked when little is left gets only what is left, and one not
        reached in time is recorded as not asked.
        """
        attempts: list[Attempt] = []
        until = None if within is None else time.monotonic() + within
        for source in self.sources:
            left = None if until is None else until - time.monotonic()
            if left is not None and left <= 0:
                reason = f"not asked: the {within:g}s given to the registries were spent"
                attempts.append(Attempt("registry", source.name, ok=False, reason=reason))
                continue
            try:
                candidate = _same_model(await self._ask(source, model, selector, left), model)
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
        for local in await self.fallback_answers(model, selector):
            resolution = self.fallback_resolution(local, attempts)
            if resolution is None:
                continue
            answered = f"version {resolution.candidate.version}"
            attempts.append(Attempt(local.step, local.name, ok=True, reason=answered))
            yield resolution

    async def fallback_answers(self, model: str, selector: Selector) -> list[LocalAnswer]:
        """Read every configured local step now (node LKG, cluster LKG, pinned), in order.

        Each read runs in a worker thread within ``LOCAL_READ_TIMEOUT``; any failure (damaged,
        foreign, planted, unreadable, too slow) becomes the step's ``reason``.
        """
        answers: list[LocalAnswer] = []
        for step, expected, loader in self._fallbacks(model, selector):
            name = expected
            try:
                value, name = await abandon_after(LOCAL_READ_TIMEOUT, loader)
            except Exception as exc:
                reason = _reason(exc)
                log.warning("fallback-unreadable", step=step, path=name, reason=reason)
                answers.append(LocalAnswer(step, name, None, reason))
                continue
            answers.append(LocalAnswer(step, name, value, "" if value else "nothing stored"))
        return answers

    def fallback_resolution(self, local: LocalAnswer, attempts: list[Attempt]) -> Resolution | None:
        """The resolution of a local step, given the ``attempts`` before it.

        None (and the reason appended to ``attempts``) when the step has no answer; else the
        caller appends the step's own attempt (at ``Resolution.index``) when it uses it. An
        ``lkg-cluster`` answer carries the claim the cluster LKG recorded (``model.revision``).
        """
        value = local.answer
        if value is None:
            attempts.append(Attempt(local.step, local.name, ok=False, reason=local.reason))
            return None
        candidate = value if isinstance(value, Candidate) else _candidate(value, local.name)
        seen = None if isinstance(value, Candidate) else value.registry_seen_at
        claim = None
        if local.step == "lkg-cluster" and isinstance(value, Pointer):
            claim = Claim.recorded(value)
        return Resolution(
            candidate=candidate,
            source=local.step,  # type: ignore[arg-type]
            detail=_fallback_detail(local.step, local.name, attempts),
            registry_seen_at=seen,
            attempts=tuple(attempts),
            index=len(attempts),
            claim=claim,
        )

    def _fallbacks(self, model: str, selector: Selector) -> list[tuple[str, str, _Loader]]:
        steps: list[tuple[str, str, _Loader]] = []
        if self.lkg is not None:
            lkg = self.lkg
            path = str(lkg.pointer_path(model, selector))
            steps.append(
                ("lkg-node", path, lambda: _named(read_entry_from(lkg.dir, model, selector)))
            )
        if self.cluster_lkg_dir is not None:
            directory = self.cluster_lkg_dir
            path = str(directory / layout.lkg_entry(model, selector))
            mounted = partial(read_entry_from, directory, model, selector, follow=True)
            steps.append(("lkg-cluster", path, lambda: _named(mounted())))
        if self.pinned is not None:
            pinned = self.pinned
            steps.append(("pinned", "pinned", lambda: (_check_pinned(pinned, model), "pinned")))
        return steps


def _named(found: tuple[Pointer | None, Path]) -> tuple[Pointer | None, str]:
    return found[0], str(found[1])


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
