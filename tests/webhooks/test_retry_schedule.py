import random

from webhooks.retry_schedule import RetrySchedule


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
