"""The init deadline split: every step with an answer gets its chance."""

from __future__ import annotations

import pytest

from pointercache.sync.budget import Budget


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("deadline", "spent", "later", "share"),
    [
        (10.0, 0.0, 2, 4.5),  # an LKG and pinned wait: half of what is left after the reserve
        (10.0, 0.0, 0, 9.0),  # the last step with an answer: all of it but the reserve
        (10.0, 4.5, 1, 2.25),  # the registry candidate stalled its half; the LKG gets half again
        (120.0, 0.0, 3, 59.5),  # the reserve is at most one second
        (2.0, 0.0, 1, 0.9),  # and a tenth of a short deadline
        (10.0, 12.0, 0, 0.0),  # past the deadline: nothing
    ],
)
def test_each_step_gets_half_of_what_is_left_while_a_later_step_waits(
    deadline: float, spent: float, later: int, share: float
) -> None:
    """Half of the time left (minus the reserve) while a later step has an answer, else all."""
    clock = Clock()
    budget = Budget(deadline, clock=clock)
    clock.now += spent
    assert budget.share(later) == pytest.approx(share)
    assert budget.left() == pytest.approx(max(0.0, deadline - spent))


def test_a_stalling_step_cannot_starve_the_last_one() -> None:
    """Three steps that each use their whole share leave the fourth at least a ninth."""
    clock = Clock()
    budget = Budget(120.0, clock=clock)
    for later in (3, 2, 1):
        clock.now += budget.share(later)
    assert budget.share(0) >= 120.0 / 9
