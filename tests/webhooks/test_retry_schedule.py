import random

import pytest

from webhooks.retry_schedule import RetrySchedule, Tier


def test_default_schedule_tiers() -> None:
    schedule = RetrySchedule.parse("1m,5m,30m,2h,8h,24h")
    assert schedule.tier_names == ["1m", "5m", "30m", "2h", "8h", "1d"]
    assert schedule.max_attempts == 7
    assert sum(schedule.delays) / 3600 > 34  # about 35 hours in all


def test_jitter_stays_within_bounds() -> None:
    schedule = RetrySchedule.parse("10s", jitter=0.2)
    rng = random.Random(7)
    delays = [schedule.delay_before(2, rng) for _ in range(200)]
    assert min(delays) >= 8 and max(delays) <= 12
    assert len({round(d, 3) for d in delays}) > 100


def test_repeated_delays_get_distinct_topic_names() -> None:
    assert RetrySchedule.parse("1s,1s").tier_names == ["1s", "1sx"]


def test_empty_schedule_means_one_attempt() -> None:
    assert RetrySchedule.parse("").max_attempts == 1


def test_the_tier_before_each_attempt_and_none_past_the_last() -> None:
    schedule = RetrySchedule.parse("1m,5m,30m")
    assert schedule.tier_before(2) == Tier(index=0, name="1m", delay=60.0)
    assert schedule.tier_before(4) == Tier(index=2, name="30m", delay=1800.0)
    assert schedule.tier_before(5) is None
    # A task parked before its first attempt waits in the first tier.
    assert schedule.tier_before(1) == schedule.tier_before(2)
    assert RetrySchedule.parse("").tier_before(2) is None


def test_delay_before_an_attempt_past_the_schedule_is_refused() -> None:
    with pytest.raises(ValueError, match="attempt 3"):
        RetrySchedule.parse("1s").delay_before(3)


def test_it_is_written_as_it_is_read() -> None:
    assert str(RetrySchedule.parse("1m, 5m,90s,2h,24h,1500ms")) == "1m,5m,90s,2h,1d,1500ms"
    assert RetrySchedule.parse(str(RetrySchedule.parse("90s,1d"))).delays == (90.0, 86400.0)
