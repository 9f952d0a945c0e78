"""What happens to a task after a failed attempt: the next retry tier, or the DLQ.

Attempt 1 is immediate (deliveries topic). After failed attempt ``n`` the task moves to
tier ``n`` (topic ``retry.<tier>``) and is due after that tier's delay (jittered); after
the last tier it goes to the DLQ with its full history.

``Retry-After`` rule: the receiver may *lengthen* the wait but never shorten it, and
only up to the next tier's delay, so a receiver cannot pull retries forward nor park a
task beyond the schedule: ``wait = clamp(retry_after, tier_delay, next_tier_delay)``.
In the last tier there is no next tier and the tier delay stands.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from services.fanout.deliverer import DeliveryResult
from webhooks.delivery import AttemptSummary, DeliveryTask
from webhooks.retry_schedule import RetrySchedule
from webhooks.topics import Topics


@dataclass(frozen=True)
class RetryStep:
    """Where the task goes next: ``topic`` is a retry tier or the DLQ."""

    topic: str
    task: DeliveryTask
    dead_letter: bool
    due: datetime | None = None


def summarise(task: DeliveryTask, result: DeliveryResult, started: datetime) -> AttemptSummary:
    """The history entry for ``task``'s current attempt."""
    return AttemptSummary(attempt=task.attempt, timestamp=started,
                          status="succeeded" if result.succeeded else "failed",
                          response_status=result.response_status, error=result.error)


def retry_wait(schedule: RetrySchedule, next_attempt: int, retry_after: float | None,
               rng: random.Random | None = None) -> float:
    """Seconds before ``next_attempt`` (>= 2), honouring ``Retry-After`` within the tier."""
    wait = schedule.delay_before(next_attempt, rng)
    if retry_after is not None and retry_after > wait:
        following = schedule.tier_before(next_attempt + 1)
        upper = following.delay if following is not None else wait
        wait = max(wait, min(retry_after, upper))
    return wait


def plan_after_failure(task: DeliveryTask, result: DeliveryResult, started: datetime,
                       schedule: RetrySchedule, topics: Topics, now: datetime,
                       stop_reason: str | None = None,
                       rng: random.Random | None = None) -> RetryStep:
    """The next tier for a failed attempt, or the DLQ when the schedule is exhausted.

    ``stop_reason`` forces the DLQ (e.g. the endpoint was disabled).
    """
    history = [*task.history, summarise(task, result, started)]
    next_attempt = task.attempt + 1
    tier = None if stop_reason is not None else schedule.tier_before(next_attempt)
    if tier is None:
        reason = (stop_reason if stop_reason is not None
                  else f"retries exhausted after {task.attempt} attempts")
        dead = task.model_copy(update={"history": history, "dlq_reason": reason,
                                       "not_before": None})
        return RetryStep(topic=topics.dlq, task=dead, dead_letter=True)
    due = now + timedelta(seconds=retry_wait(schedule, next_attempt, result.retry_after, rng))
    moved = task.model_copy(update={"history": history, "attempt": next_attempt,
                                    "not_before": due})
    return RetryStep(topic=topics.retry(tier.name), task=moved, dead_letter=False, due=due)
