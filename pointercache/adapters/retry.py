"""The one retry/backoff helper: exponential backoff with full jitter, on top of tenacity.

Every loop that tries a call again (a part of an S3 object, an artifact file, a resumed HTTP
body, a conflicting ConfigMap write, a broken watch) takes its policy from a ``Backoff`` and its
loop from ``retrying``/``aretrying`` (tenacity) — or, for a loop that is not shaped like one call
(a watch that reconnects for as long as the process runs), its delays from ``Backoff.delay``.

Delays follow "full jitter" (AWS Architecture Blog, *Exponential Backoff And Jitter*, 2015):
attempt ``n`` (1-based) waits ``uniform(0, min(maximum, initial * 2 ** (n - 1)))`` seconds.
What is worth retrying is decided by the caller's predicate; by default, and everywhere errors
are already translated, that is a ``Transient`` error that is not ``Stalled``: a peer that
trickles is not asked again within the same transfer (it would trickle again, and each try costs
a whole rate window); the failure goes up, where the caller backs the version off.

Holding a failed version off (the sidecar does not download a version that failed again on every
poll) uses ``Backoff.cooldown``: "equal jitter" from the same article, so a hold-off is never
shorter than half its exponential ceiling.

tenacity is imported when a loop is built, not with this module (start-up stays light).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pointercache.errors import ConfigError, Stalled, Transient

if TYPE_CHECKING:
    import tenacity

Predicate = Callable[[BaseException], bool]
"""Whether a failure is worth another attempt."""


def is_transient(exc: BaseException) -> bool:
    """The default predicate: a ``pointercache.errors.Transient`` error other than ``Stalled``."""
    return isinstance(exc, Transient) and not isinstance(exc, Stalled)


@dataclass(frozen=True, slots=True)
class Backoff:
    """A retry policy: how many attempts, and how long to wait between them (seconds)."""

    attempts: int = 4
    """Total attempts, the first included (1 means no retry)."""
    initial: float = 0.25
    """Upper bound of the first wait, in seconds; doubles per attempt."""
    maximum: float = 5.0
    """Upper bound of any single wait, in seconds."""

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.initial < 0 or self.maximum < self.initial:
            raise ConfigError(f"backoff {self}: attempts >= 1 and 0 <= initial <= maximum")

    def ceiling(self, attempt: int) -> float:
        """The exponential ceiling after failed attempt ``attempt`` (1-based), in seconds."""
        return min(self.maximum, self.initial * 2.0 ** max(0, min(attempt - 1, 62)))

    def delay(self, attempt: int) -> float:
        """The jittered wait after failed attempt ``attempt`` (1-based), in seconds."""
        return random.uniform(0, self.ceiling(attempt))  # noqa: S311 - jitter, not cryptography

    def cooldown(self, failures: int) -> float:
        """How long to hold off after ``failures`` failures: between half and all of the
        ceiling ("equal jitter"), so a hold-off never collapses to nothing."""
        ceiling = self.ceiling(failures)
        return ceiling / 2 + random.uniform(0, ceiling / 2)  # noqa: S311 - jitter

    def _wait(self) -> tenacity.wait.wait_base:
        import tenacity

        return tenacity.wait_random_exponential(multiplier=self.initial, max=self.maximum)


def retrying(
    backoff: Backoff,
    *,
    retry_on: Predicate = is_transient,
    sleep: Callable[[float], None] | None = None,
    before_sleep: Callable[[BaseException, float], None] | None = None,
    stop: Callable[[int], bool] | None = None,
) -> tenacity.Retrying:
    """A blocking retry loop: ``for attempt in retrying(b): with attempt: call()``.

    The last failure is re-raised as it is (never wrapped). ``sleep`` replaces ``time.sleep``
    (an abortable wait, say ``event.wait`` that raises once set); ``before_sleep`` sees each
    failure and the wait that follows (for a log line); ``stop(attempt)`` may end the loop
    before ``backoff.attempts``.
    """
    import tenacity

    kwargs = _common(backoff, retry_on, before_sleep, stop)
    if sleep is not None:
        kwargs["sleep"] = sleep
    return tenacity.Retrying(**kwargs)


def aretrying(
    backoff: Backoff,
    *,
    retry_on: Predicate = is_transient,
    before_sleep: Callable[[BaseException, float], None] | None = None,
    stop: Callable[[int], bool] | None = None,
) -> tenacity.AsyncRetrying:
    """The asyncio form of ``retrying``: ``async for attempt in aretrying(b): with attempt:``.

    Waits with ``asyncio.sleep``, so a cancelled task stops waiting at once.
    """
    import tenacity

    return tenacity.AsyncRetrying(**_common(backoff, retry_on, before_sleep, stop))


def _common(
    backoff: Backoff,
    retry_on: Predicate,
    before_sleep: Callable[[BaseException, float], None] | None,
    stop: Callable[[int], bool] | None,
) -> dict[str, Any]:
    import tenacity

    def should_stop(state: tenacity.RetryCallState) -> bool:
        done = state.attempt_number >= backoff.attempts
        return done or (stop is not None and stop(state.attempt_number))

    def report(state: tenacity.RetryCallState) -> None:
        if before_sleep is None or state.outcome is None or state.next_action is None:
            return
        exc = state.outcome.exception()
        if exc is not None:
            before_sleep(exc, state.next_action.sleep)

    return {
        "stop": should_stop,
        "wait": backoff._wait(),  # noqa: SLF001 - the policy's own wait strategy
        "retry": tenacity.retry_if_exception(retry_on),
        "before_sleep": report,
        "reraise": True,
    }
