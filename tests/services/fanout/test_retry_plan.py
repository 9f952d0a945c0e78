"""Where a failed task goes next, and how Retry-After is clamped."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.fanout.deliverer import DeliveryResult
from services.fanout.retry_plan import plan_after_failure, retry_wait
from webhooks.delivery import DeliveryTask
from webhooks.envelope import Envelope
from webhooks.retry_schedule import RetrySchedule
from webhooks.topics import Topics

SCHEDULE = RetrySchedule.parse("1m,5m,30m", jitter=0.0)
TOPICS = Topics(prefix="webhooks", retry_tiers=tuple(SCHEDULE.tier_names))
NOW = datetime(2026, 11, 22, 12, tzinfo=UTC)
FAILED = DeliveryResult(False, 12.5, response_status=503, error="http_status")


def task(attempt: int = 1) -> DeliveryTask:
    event = Envelope.create(type="order.paid", tenant="acme", data={"object": {}},
                            api_version="2026-11-01")
    return DeliveryTask.create(event, "ep_1").model_copy(update={"attempt": attempt})


def test_retry_after_only_lengthens_the_wait_and_never_past_the_next_tier() -> None:
    assert retry_wait(SCHEDULE, 2, None) == 60          # tier 1m
    assert retry_wait(SCHEDULE, 2, 5) == 60             # shorter: ignored
    assert retry_wait(SCHEDULE, 2, 120) == 120          # within 1m..5m: honoured
    assert retry_wait(SCHEDULE, 2, 86400) == 300        # clamped to the next tier (5m)
    assert retry_wait(SCHEDULE, 4, 86400) == 1800       # last tier: no next tier to reach


def test_each_failure_moves_the_task_one_tier_down_with_its_history() -> None:
    step = plan_after_failure(task(1), FAILED, NOW, SCHEDULE, TOPICS, NOW)
    assert step.topic == "webhooks.retry.1m" and not step.dead_letter
    assert step.task.attempt == 2 and step.due == NOW + timedelta(minutes=1)
    assert step.task.not_before == NOW + timedelta(minutes=1)
    assert b'"not_before":"2026-11-22T12:01:00.000000Z"' in step.task.to_json()
    assert [(h.attempt, h.status, h.response_status) for h in step.task.history] == [
        (1, "failed", 503)]

    step = plan_after_failure(step.task, FAILED, NOW, SCHEDULE, TOPICS, NOW)
    assert step.topic == "webhooks.retry.5m" and step.task.attempt == 3
    step = plan_after_failure(step.task, FAILED, NOW, SCHEDULE, TOPICS, NOW)
    assert step.topic == "webhooks.retry.30m" and step.task.attempt == 4


def test_after_the_last_tier_the_task_goes_to_the_dlq_with_every_attempt() -> None:
    failed = task(4).model_copy(update={"history": [
        plan_after_failure(task(n), FAILED, NOW, SCHEDULE, TOPICS, NOW).task.history[0]
        for n in (1, 2, 3)]})
    step = plan_after_failure(failed, FAILED, NOW, SCHEDULE, TOPICS, NOW)
    assert step.dead_letter and step.topic == "webhooks.dlq" and step.due is None
    assert step.task.attempt == 4 and step.task.not_before is None
    assert [h.attempt for h in step.task.history] == [1, 2, 3, 4]
    assert step.task.dlq_reason == "retries exhausted after 4 attempts"
    # Round-trips, and its JSON is valid under its schema.
    assert DeliveryTask.from_json(step.task.to_json()) == step.task
    assert DeliveryTask.validated(step.task.to_json()) == step.task


def test_a_stop_reason_sends_the_task_to_the_dlq_at_once() -> None:
    step = plan_after_failure(task(1), FAILED, NOW, SCHEDULE, TOPICS, NOW,
                              stop_reason="endpoint disabled: 410")
    assert step.dead_letter and step.task.dlq_reason == "endpoint disabled: 410"
