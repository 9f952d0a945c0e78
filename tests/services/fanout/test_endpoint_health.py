"""Auto-disable decisions, and when the failure streak is written down."""

from __future__ import annotations

from services.fanout.endpoint_health import FailureTracker, SavedStreak, StreakView, Verdict
from webhooks.kafka import KafkaConnection


def test_failing_for_the_whole_window_disables() -> None:
    tracker = FailureTracker(disable_after=3600)
    assert not tracker.record("ep_1", False, now=1000).disable
    assert not tracker.record("ep_1", False, now=4000).disable
    assert tracker.record("ep_1", False, now=4600).disable


def test_a_success_resets_the_streak() -> None:
    tracker = FailureTracker(disable_after=3600)
    tracker.record("ep_1", False, now=1000)
    tracker.record("ep_1", True, now=2000)
    assert not tracker.record("ep_1", False, now=4700).disable
    assert not tracker.record("ep_1", False, now=8000).disable  # the new streak began at 4700
    assert tracker.record("ep_1", False, now=4700 + 3600).disable


def test_consecutive_failure_count_disables_when_configured() -> None:
    tracker = FailureTracker(disable_after=10**9, disable_after_failures=3)
    assert not tracker.record("ep_1", False, now=1).disable
    assert not tracker.record("ep_2", False, now=1).disable  # other endpoints count apart
    assert not tracker.record("ep_1", False, now=2).disable
    assert tracker.record("ep_1", False, now=3).disable
    tracker.forget("ep_1")
    assert not tracker.record("ep_1", False, now=4).disable


def test_a_streak_is_saved_once_it_lasts_and_then_every_save_interval() -> None:
    tracker = FailureTracker(disable_after=3600)  # saves every 60 s
    assert tracker.record("ep_1", False, now=1000) == Verdict()
    assert tracker.record("ep_1", False, now=1030) == Verdict()
    assert tracker.record("ep_1", False, now=1060) == Verdict(
        save=True, saved=SavedStreak(since=1000, failures=3))
    assert tracker.record("ep_1", False, now=1100) == Verdict()
    assert tracker.record("ep_1", False, now=1120).saved == SavedStreak(1000, 5)


def test_the_first_success_after_a_saved_streak_clears_it_and_only_then() -> None:
    tracker = FailureTracker(disable_after=3600)
    tracker.record("ep_1", False, now=1000)
    assert tracker.record("ep_1", True, now=1010) == Verdict()  # never saved: nothing to clear
    tracker.record("ep_1", False, now=2000)
    tracker.record("ep_1", False, now=2100)  # saved
    assert tracker.record("ep_1", True, now=2200) == Verdict(save=True, saved=None)
    assert tracker.record("ep_1", True, now=2300) == Verdict()


def saved_view(streaks: dict[str, SavedStreak]) -> StreakView:
    """A view holding ``streaks``, as if read from the topic (the follower is not started)."""
    view = StreakView(KafkaConnection(bootstrap="unused:9092"), "unused")
    for endpoint_id, streak in streaks.items():
        view.apply_record(endpoint_id.encode(), streak.to_json(), 0)
    return view


def test_a_restarted_tracker_continues_the_saved_streak() -> None:
    view = saved_view({"ep_1": SavedStreak(since=1000, failures=7)})
    tracker = FailureTracker(disable_after=3600, saved=view)
    assert not tracker.record("ep_1", False, now=4000).disable
    assert tracker.record("ep_1", False, now=4600).disable  # 3600 s after the saved start
    counting = FailureTracker(disable_after=10**9, disable_after_failures=8, saved=view)
    assert counting.record("ep_1", False, now=5000).disable  # the 8th failure in a row


def test_a_success_ends_a_saved_streak_even_if_the_view_still_shows_it() -> None:
    view = saved_view({"ep_1": SavedStreak(since=1000, failures=7)})
    tracker = FailureTracker(disable_after=3600, saved=view)
    assert tracker.record("ep_1", True, now=4000) == Verdict(save=True, saved=None)
    # The tombstone has not reached the view yet; the tracker's own record is newer.
    assert not tracker.record("ep_1", False, now=4700).disable
    assert not tracker.record("ep_1", False, now=4700 + 3599).disable


def test_after_a_rebalance_the_saved_streaks_are_the_truth() -> None:
    view = saved_view({})
    tracker = FailureTracker(disable_after=3600, saved=view)
    tracker.record("ep_1", False, now=1000)  # held in memory only
    # Meanwhile another worker owned the partition and saw the endpoint recover.
    tracker.reset()
    assert not tracker.record("ep_1", False, now=4700).disable
    assert tracker.forget("ep_1") is False  # nothing saved, nothing to clear


def test_a_malformed_saved_record_is_skipped() -> None:
    view = saved_view({})
    view.apply_record(b"ep_1", b'{"since": "soon"}', 0)
    view.apply_record(b"ep_2", SavedStreak(5, 1).to_json(), 0)
    view.apply_record(b"ep_2", None, 0)
    assert view.get("ep_1") is None and view.get("ep_2") is None
