"""Auto-disable decisions."""

from __future__ import annotations

from services.fanout.endpoint_health import FailureTracker


def test_failing_for_the_whole_window_disables() -> None:
    tracker = FailureTracker(disable_after=3600)
    assert not tracker.record("ep_1", False, now=1000)
    assert not tracker.record("ep_1", False, now=4000)
    assert tracker.record("ep_1", False, now=4600)


def test_a_success_resets_the_streak() -> None:
    tracker = FailureTracker(disable_after=3600)
    tracker.record("ep_1", False, now=1000)
    tracker.record("ep_1", True, now=2000)
    assert not tracker.record("ep_1", False, now=4700)
    assert not tracker.record("ep_1", False, now=8000)  # the new streak began at 4700
    assert tracker.record("ep_1", False, now=4700 + 3600)


def test_consecutive_failure_count_disables_when_configured() -> None:
    tracker = FailureTracker(disable_after=10**9, disable_after_failures=3)
    assert not tracker.record("ep_1", False, now=1)
    assert not tracker.record("ep_2", False, now=1)  # other endpoints count apart
    assert not tracker.record("ep_1", False, now=2)
    assert tracker.record("ep_1", False, now=3)
    tracker.forget("ep_1")
    assert not tracker.record("ep_1", False, now=4)
