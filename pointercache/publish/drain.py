"""Apply the outbox to the registries: in publish order per model, with jittered backoff.

One *pass* (``Drainer.drain_once``) walks the queued entries in ``seq`` order. Entries of one
(registry, model) are applied strictly in order: the first one that fails blocks the rest of its
group for this pass (they are counted as pending), so version 9 is never registered before
version 8, and an alias never moves before its version exists (both are in one registration).
Other groups go on. A ``RegistrationConflict`` rejects that entry for good and the group goes on;
every other failure leaves the entry queued with its error recorded (``last_error``).

Only one process drains an outbox at a time (``Outbox.drain_lock``). ``drain`` and ``run`` retry
passes that leave entries pending with exponential backoff and full jitter (the project's one
retry helper, ``pointercache.adapters.retry``: ``Backoff``, ``aretrying``).
``publish`` is what ``pointercache publish`` does: queue durably, then one bounded try.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pointercache.adapters.retry import Backoff, aretrying
from pointercache.base.log import log
from pointercache.base.redact import redact_text
from pointercache.errors import RegistrationConflict, Transient
from pointercache.publish.outbox import Entry, Outbox, State
from pointercache.publish.registrars import Registrar, open_registrar
from pointercache.publish.registration import Registration
from pointercache.resolve.sources import SourceOptions

LOCK_WAIT = 1.0
"""Seconds a drain pass waits for another drainer's lock before counting as pending."""


FOREVER = 1 << 62
"""``Backoff.attempts`` of a drainer: passes go on until nothing is pending (or a deadline)."""


def backoff(initial: float = 0.5, maximum: float = 30.0) -> Backoff:
    """The drainer's policy between passes that left entries pending (seconds): the first wait
    is at most ``initial``, the bound doubles per pass up to ``maximum``, full jitter."""
    return Backoff(attempts=FOREVER, initial=initial, maximum=maximum)


@dataclass(slots=True)
class Pass:
    """What one pass did."""

    registered: list[int] = field(default_factory=list)
    """seq of the entries the registry accepted in this pass."""
    rejected: list[int] = field(default_factory=list)
    """seq of the entries rejected for good (another artifact under the version)."""
    failed: dict[int, str] = field(default_factory=dict)
    """seq → error of the entries that failed and stay queued."""
    pending: int = 0
    """Entries still queued after the pass (failed ones and those they held back)."""
    busy: bool = False
    """True if another drainer held the outbox, so nothing was tried."""


class _Pending(Transient):
    """A pass left entries queued; the retry loop waits and passes again."""

    def __init__(self, report: Pass) -> None:
        super().__init__(f"{report.pending} entries pending")
        self.report = report


def _raise_if_pending(report: Pass) -> None:
    if report.pending:
        raise _Pending(report)


def _one_line(exc: BaseException) -> str:
    return redact_text(" ".join(f"{type(exc).__name__}: {exc}".split()))


def _log_wait(exc: BaseException, seconds: float) -> None:
    log.debug("retry-scheduled", wait_seconds=round(seconds, 3), reason=_one_line(exc))


class Drainer:
    """Applies an outbox's queued entries; one registrar per registry URI, opened on demand."""

    def __init__(
        self,
        outbox: Outbox,
        options: SourceOptions | None = None,
        opener: Callable[[str, SourceOptions], Registrar] = open_registrar,
    ) -> None:
        self.outbox = outbox
        self.options = options or SourceOptions(timeout=5.0)
        self._opener = opener
        self._registrars: dict[str, Registrar] = {}

    def _registrar(self, uri: str) -> Registrar:
        if uri not in self._registrars:
            self._registrars[uri] = self._opener(uri, self.options)
        return self._registrars[uri]

    async def _attempt(self, entry: Entry, deadline: float | None) -> Any:
        async with asyncio.timeout_at(deadline):
            return await self._registrar(entry.registry).register(entry.registration)

    async def _apply(self, entry: Entry, report: Pass, deadline: float | None) -> bool:
        """Try one entry; record the outcome; True unless it stays queued."""
        reg = entry.registration
        fields = {"seq": entry.seq, "model": reg.model, "version": reg.version}
        try:
            receipt = await self._attempt(entry, deadline)
        except RegistrationConflict as exc:
            self.outbox.mark_rejected(entry.seq, _one_line(exc))
            report.rejected.append(entry.seq)
            log.error("registration-rejected", **fields, reason=_one_line(exc))
            return True
        except TimeoutError:
            error = "TimeoutError: no answer within the publish timeout"
        except Exception as exc:
            error = _one_line(exc)
        else:
            self.outbox.mark_registered(entry.seq, receipt.summary())
            report.registered.append(entry.seq)
            log.info("registered", **fields, result=receipt.summary(), registry=entry.registry)
            return True
        self.outbox.mark_failed(entry.seq, error)
        report.failed[entry.seq] = error
        log.warning("registration-failed", **fields, error=error, registry=entry.registry)
        return False

    async def drain_once(
        self,
        *,
        registry: str | None = None,
        model: str | None = None,
        through: int | None = None,
        deadline: float | None = None,
    ) -> Pass:
        """One pass over the queued entries (optionally of one registry and model, up to seq
        ``through``, until the event-loop time ``deadline``). The caller holds the drain lock.
        """
        report = Pass()
        blocked: set[tuple[str, str]] = set()
        for entry in self.outbox.queued():
            group = (entry.registry, entry.registration.model)
            if (through is not None and entry.seq > through) or (
                (registry, model) != (None, None) and group != (registry, model)
            ):
                continue
            out_of_time = deadline is not None and asyncio.get_running_loop().time() >= deadline
            if group in blocked or out_of_time or not await self._apply(entry, report, deadline):
                blocked.add(group)
                report.pending += 1
        return report

    async def locked_pass(self) -> Pass:
        """One pass under the drain lock (waiting ``LOCK_WAIT`` s for it); logs a summary."""
        with self.outbox.drain_lock(LOCK_WAIT) as held:
            if not held:
                return Pass(pending=len(self.outbox.queued()), busy=True)
            report = await self.drain_once()
        log.info(
            "drain-pass",
            registered=len(report.registered),
            rejected=len(report.rejected),
            pending=report.pending,
        )
        return report

    async def drain(self, policy: Backoff, *, give_up_after: float | None) -> Pass:
        """Pass after pass, with backoff, until nothing is pending; what the passes did.

        With ``give_up_after`` (seconds) it stops retrying then and returns with pending > 0.
        """
        total = Pass()
        started = time.monotonic()

        def out_of_time(_attempt: int) -> bool:
            return give_up_after is not None and time.monotonic() - started >= give_up_after

        try:
            async for attempt in aretrying(
                policy,
                retry_on=lambda exc: isinstance(exc, _Pending),
                before_sleep=_log_wait,
                stop=out_of_time,
            ):
                with attempt:
                    report = await self.locked_pass()
                    total.registered += report.registered
                    total.rejected += report.rejected
                    total.failed = report.failed
                    total.pending, total.busy = report.pending, report.busy
                    _raise_if_pending(report)
        except _Pending:
            pass
        return total

    async def run(self, policy: Backoff, *, poll: float) -> None:
        """Drain forever: when nothing is queued, look again every ``poll`` seconds.

        Runs until cancelled (SIGTERM in the CLI); a cancellation lands between registry calls
        or in a wait, never inside an outbox write.
        """
        while True:
            if self.outbox.counts()[State.QUEUED]:
                await self.drain(policy, give_up_after=None)
            await asyncio.sleep(poll)

    async def aclose(self) -> None:
        """Close every registrar opened so far."""
        registrars, self._registrars = list(self._registrars.values()), {}
        for registrar in registrars:
            with contextlib.suppress(Exception):
                await registrar.aclose()


async def publish(drainer: Drainer, registry: str, registration: Registration) -> Entry:
    """Queue ``registration`` durably, then try the registry once; the entry as it ends up.

    The try applies the model's earlier queued entries first (order), all within the drainer's
    ``options.timeout``; if another process holds the drain lock, the entry just stays queued.
    ``OutboxError`` if the outbox cannot be written (then nothing was queued).
    """
    outbox = drainer.outbox
    entry, new = outbox.enqueue(registry, registration)
    log.info("queued" if new else "already-queued", seq=entry.seq, state=entry.state.value)
    if entry.state is not State.QUEUED:
        return entry
    budget = drainer.options.timeout
    deadline = asyncio.get_running_loop().time() + budget
    with outbox.drain_lock(budget / 2) as held:
        if held:
            await drainer.drain_once(
                registry=registry,
                model=registration.model,
                through=entry.seq,
                deadline=deadline,
            )
    return outbox.get(entry.seq)
