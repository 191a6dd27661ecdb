"""The init container's deadline, split so that every step of the chain gets its chance.

``--deadline`` is one promise: the init container exits within it, published or with a one-line
reason. Inside it, a stalled registry or a candidate whose download trickles must not eat the time
the node LKG, the cluster LKG and the pinned version need. The rule (docs/chain.md):

- the local steps are read first (node and cluster LKG files, the pinned setting: a few
  milliseconds), so the number of *later steps that have an answer* is known;
- while a later step has an answer, the registries together, and then each candidate's download
  and verification, may use at most **half of the time left**; the last step with an answer may
  use **all of it** — always keeping back ``reserve`` seconds (a tenth of the deadline, at most
  one second) for installing, flipping and writing the termination log.

So with an LKG and a pinned version on hand, a registry candidate that stalls is abandoned at
``deadline / 2``, the node LKG gets at least a quarter of the deadline, and so on; a step with
nothing to offer costs nothing. Installing and flipping a prepared candidate is not abandoned
half-way (it is local and short); the process-wide watchdog (``sync.watchdog``) ends whatever is
still running at the deadline.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class Budget:
    """Seconds left of a deadline, and each step's share of them."""

    def __init__(self, seconds: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        """The whole deadline (``--deadline``)."""
        self.reserve = min(1.0, seconds / 10)
        """Seconds kept back from every share, for installing and flipping what was prepared."""
        self._clock = clock
        self.ends = clock() + seconds
        """When it ends, on ``clock``."""

    def left(self) -> float:
        """Seconds left (0 once the deadline passed)."""
        return max(0.0, self.ends - self._clock())

    def share(self, later: int) -> float:
        """Seconds the next step may use when ``later`` steps after it have an answer.

        Half of what is left while ``later`` > 0, everything that is left otherwise, the
        ``reserve`` kept back either way.
        """
        usable = max(0.0, self.left() - self.reserve)
        return usable / 2 if later > 0 else usable
