"""The one pace bound: a minimum rate per window and a cap from the size, judged per chunk."""

from __future__ import annotations

import pytest

from pointercache.adapters.pace import Pace
from pointercache.adapters.retry import is_transient
from pointercache.errors import ConfigError, FetchUnavailable, Stalled

KIB = 1024
PACE = Pace(min_rate=64 * KIB, window=10.0)


class Clock:
    """A clock the test moves by hand (time is our own protocol here, not a library's)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def feed(meter_size: int | None, steps: list[tuple[float, int]], share: int = 1) -> int:
    """Advance the clock and add bytes step by step; return how many steps were accepted."""
    clock = Clock()
    meter = PACE.meter("s3://b/k", meter_size, share=share, clock=clock)
    for accepted, (seconds, nbytes) in enumerate(steps):
        clock.now += seconds
        try:
            meter.add(nbytes)
        except Stalled:
            return accepted
    return len(steps)


def test_a_steady_transfer_is_never_stalled() -> None:
    """1 MiB/s for 60 s (well above 64 KiB/s) passes every window."""
    assert feed(None, [(0.1, 100 * KIB)] * 600) == 600


def test_a_trickle_is_stalled_after_one_window() -> None:
    """Headers and 1 KiB, then a byte every 2 s: refused at the first chunk past 10 s."""
    steps = [(0.0, KIB)] + [(2.0, 1)] * 20
    assert feed(None, steps) == 5  # the chunk at t=10 s judges the window and fails


def test_a_slow_start_is_forgiven_within_the_first_window() -> None:
    """Nothing for 9 s (connecting, a cold server), then a fast body: not stalled."""
    assert feed(None, [(9.0, 1), *[(0.1, 100 * KIB)] * 100]) == 101


def test_each_window_must_keep_the_pace_on_its_own() -> None:
    """A fast first window does not pay for a trickle in the next one."""
    fast = [(0.1, 1024 * KIB)] * 50  # 5 s at 10 MiB/s
    slow = [(2.0, 1)] * 20
    # the first window (0-10 s) passes at t=11; the next one (11-21 s) fails at t=21
    assert feed(None, fast + slow) == 50 + 7


def test_the_total_cap_bounds_a_transfer_that_keeps_the_rate() -> None:
    """Exactly the minimum rate forever: 1 MiB may take 10 s + 16 s, not more."""
    steps = [(1.0, 64 * KIB)] * 40
    assert feed(1 << 20, steps) == 26


def test_a_share_divides_the_rate_among_parallel_streams() -> None:
    """8 parallel parts may each go at 8 KiB/s; one alone may not."""
    steps = [(1.0, 9 * KIB)] * 30
    assert feed(None, steps, share=8) == 30
    assert feed(None, steps, share=1) == 9


def test_check_judges_without_new_bytes_and_restart_window_forgives_a_reconnect() -> None:
    """check() fails a silent transfer past its window; a new window starts after reconnecting."""
    clock = Clock()
    meter = PACE.meter("x", None, clock=clock)
    clock.now += 5
    meter.check()
    clock.now += 6
    with pytest.raises(Stalled, match="0 bytes in 11s"):
        meter.check()
    meter.restart_window()
    clock.now += 9
    meter.add(KIB * 1024)
    assert meter.seconds_left() == pytest.approx(1.0)


def test_expect_sets_the_cap_from_the_start_and_rate_is_the_mean() -> None:
    """A size learnt later caps the transfer from its start; rate is bytes over elapsed time."""
    clock = Clock()
    meter = PACE.meter("x", None, clock=clock)
    clock.now += 20
    meter.add(20 * 1024 * KIB)
    meter.expect(64 * KIB)  # cap: 10 s + 1 s, already over
    assert meter.rate == pytest.approx(1024 * KIB)
    clock.now += 0.1
    with pytest.raises(Stalled, match="not done after 20s"):
        meter.add(1)


def test_stalled_is_transient_but_never_retried_at_once() -> None:
    """Stalled is a FetchUnavailable (falls through like one), not retried by the retry loop."""
    assert issubclass(Stalled, FetchUnavailable)
    assert not is_transient(Stalled("x"))
    assert is_transient(FetchUnavailable("x"))


@pytest.mark.parametrize(("rate", "window"), [(0, 10.0), (1.0, 0.0), (-5, 1.0)])
def test_a_pace_must_be_positive(rate: float, window: float) -> None:
    """A zero or negative rate or window is a configuration error."""
    with pytest.raises(ConfigError):
        Pace(min_rate=rate, window=window)
