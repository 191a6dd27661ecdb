"""Failed versions are held off with exponential backoff, not fetched on every poll."""

from __future__ import annotations

import pytest

from pointercache.adapters.retry import Backoff
from pointercache.model.candidate import Candidate
from pointercache.service.failures import KEEP, FailedVersions

D1, D2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def cand(version: str = "2", digest: str | None = D1, uri: str = "s3://b/m/2/") -> Candidate:
    """A candidate named by a registry."""
    return Candidate(model="recommender", version=version, uri=uri, digest=digest)


def test_a_failure_holds_the_version_off_for_a_growing_while() -> None:
    """After n failures the version is held off between half and all of 15 s * 2**(n-1)."""
    clock = Clock()
    failures = FailedVersions(Backoff(attempts=1, initial=15.0, maximum=900.0), clock=clock)
    assert failures.holding(cand()) is None
    for n in range(1, 10):
        ceiling = min(900.0, 15.0 * 2 ** (n - 1))  # 15, 30, 60 ... 900, 900
        entry = failures.failed(cand(), f"failure {n}")
        assert entry.failures == n
        assert ceiling / 2 <= entry.retry_at - clock.now <= ceiling
        clock.now += ceiling / 2 - 0.01
        assert failures.holding(cand()) is entry
        clock.now = entry.retry_at
        assert failures.holding(cand()) is None
    shown = failures.to_list()[0]
    assert (shown["version"], shown["failures"], shown["last_error"]) == ("2", 9, "failure 9")


@pytest.mark.parametrize(
    "other", [cand(digest=D2), cand(version="3"), cand(digest=None, uri="s3://b/m/2b/")]
)
def test_another_upload_is_a_new_candidate(other: Candidate) -> None:
    """Another digest, version or URI is not held off by the first one's failures."""
    failures = FailedVersions(clock=Clock())
    failures.failed(cand(digest=None) if other.digest is None else cand(), "bad digest")
    assert failures.holding(other) is None


def test_success_forgets_and_the_memory_is_bounded() -> None:
    """A success forgets a candidate; only the KEEP most recent failures are remembered."""
    failures = FailedVersions(clock=Clock())
    failures.failed(cand(), "x")
    failures.forget(cand())
    assert failures.holding(cand()) is None
    for n in range(KEEP + 5):
        failures.failed(cand(version=str(n + 10)), "x")
    assert len(failures.to_list()) == KEEP
    assert failures.holding(cand(version="10")) is None
    assert failures.holding(cand(version=str(KEEP + 14))) is not None
