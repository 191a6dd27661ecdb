"""Progress lines: throttled, with rate and ETA, and a final line."""

from __future__ import annotations

import orjson
import pytest

from pointercache.stage.progress import ProgressReporter


class FakeClock:
    """A clock the test advances by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _events(capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in capsys.readouterr().err.splitlines() if line]


def test_progress_logs_at_most_once_per_interval(capsys: pytest.CaptureFixture[str]) -> None:
    """Calls within the interval are silent; one line appears once the interval has passed."""
    clock = FakeClock()
    progress = ProgressReporter("s3://b/k", 1000, every=10.0, clock=clock)
    for done in range(0, 500, 50):
        clock.now += 0.5
        progress(done, 1000)
    assert _events(capsys) == []
    clock.now += 10.0
    progress(500, 1000)
    progress(600, 1000)
    events = _events(capsys)
    assert [e["event"] for e in events] == ["fetch-progress"]
    assert events[0]["bytes"] == 500
    assert events[0]["percent"] == 50.0
    assert events[0]["eta_s"] == pytest.approx(15.0)


def test_progress_finish_logs_totals_and_redacts(capsys: pytest.CaptureFixture[str]) -> None:
    """finish() logs fetch-done with the byte count; a presigned query never reaches the log."""
    clock = FakeClock()
    progress = ProgressReporter(
        "https://h.example/m.bin?X-Amz-Signature=deadbeef", None, clock=clock
    )
    clock.now += 4.0
    progress(8 << 20, None)
    progress.finish()
    err = capsys.readouterr().err
    assert "deadbeef" not in err
    (event,) = [orjson.loads(line) for line in err.splitlines()]
    assert event["event"] == "fetch-done"
    assert event["bytes"] == 8 << 20
    assert event["rate_mib_s"] == 2.0
    assert "eta_s" not in event


def test_progress_failure_is_a_warning(capsys: pytest.CaptureFixture[str]) -> None:
    """finish(ok=False) logs fetch-failed at warning level."""
    progress = ProgressReporter("s3://b/k", 10, clock=FakeClock())
    progress.finish(ok=False)
    (event,) = _events(capsys)
    assert (event["event"], event["level"]) == ("fetch-failed", "warning")
