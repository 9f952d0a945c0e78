"""Delivery tasks and attempt records: the messages between matching, delivery and the log.

A :class:`DeliveryTask` (schema ``delivery_task.v1``) is one event for one endpoint. It
travels on the deliveries topic, through the retry tier topics, and ends on the DLQ if
every attempt fails. It never carries the endpoint's URL or secrets: the deliverer
looks the endpoint up when it sends, so a changed URL or rotated secret takes effect
for retries too. Every attempt produces an :class:`AttemptRecord` (``attempt.v1``).
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field
from ulid import ULID

from webhooks.envelope import Envelope, Timestamp, utcnow
from webhooks.record import JsonRecord

DELIVERY_TASK_SCHEMA = "delivery_task.v1"
ATTEMPT_SCHEMA = "attempt.v1"

Trigger = Literal["event", "redeliver", "recover", "test", "replay", "verify"]
"""What queued a task; ``verify``: an endpoint's URL verification challenge
(:mod:`webhooks.endpoint_verification`), attempted once, never retried."""
AttemptStatus = Literal["succeeded", "failed"]
# What happened to a task after one step. ``held`` (a paused endpoint's task parked
# again) and ``tenant_deleted`` are counted in metrics but leave no attempt record.
# ``verified`` / ``verification_failed``: what a verification challenge's one attempt decided.
Outcome = Literal["delivered", "retrying", "dead_lettered", "endpoint_disabled", "dropped",
                  "held", "tenant_deleted", "verified", "verification_failed"]
HeaderPairs = list[tuple[str, str]]
"""HTTP headers as (name, value) pairs in the order they were sent (names repeat)."""


class AttemptSummary(JsonRecord):
    """What a task remembers of each attempt it went through."""

    attempt: int
    timestamp: Timestamp
    status: AttemptStatus
    response_status: int | None = None
    error: str | None = None


class DeliveryTask(JsonRecord):
    """One event to deliver to one endpoint."""

    schema_name: ClassVar[str | None] = DELIVERY_TASK_SCHEMA

    task_id: str
    endpoint_id: str
    tenant: str
    event: Envelope
    attempt: int = 1
    not_before: Timestamp | None = None
    trigger: Trigger = "event"
    history: list[AttemptSummary] = Field(default_factory=list)
    dlq_reason: str | None = None

    @classmethod
    def create(cls, event: Envelope, endpoint_id: str, trigger: Trigger = "event"
               ) -> DeliveryTask:
        """A fresh task for attempt 1, due now."""
        return cls(task_id=f"dlv_{ULID()}", endpoint_id=endpoint_id, tenant=event.tenant,
                   event=event, trigger=trigger)

    @property
    def key(self) -> bytes:
        """The Kafka key: tasks of one endpoint share a partition."""
        return self.endpoint_id.encode()


class AttemptRecord(JsonRecord):
    """One HTTP attempt, as published on the attempts topic."""

    schema_name: ClassVar[str | None] = ATTEMPT_SCHEMA

    id: str = Field(default_factory=lambda: f"att_{ULID()}")
    task_id: str
    event_id: str
    event_type: str
    endpoint_id: str
    tenant: str
    attempt: int
    trigger: Trigger
    url: str
    status: AttemptStatus
    response_status: int | None = None
    response_body: str | None = None
    error: str | None = None
    latency_ms: float
    timestamp: Timestamp = Field(default_factory=utcnow)
    next_attempt_at: Timestamp | None = None
    outcome: Outcome
    # Since 2026-12-04; None in older records and where nothing was sent / nothing came back.
    request_headers: HeaderPairs | None = None
    """The request's headers as sent, signature included; secret custom values masked."""
    response_headers: HeaderPairs | None = None
    """The response's headers, the first 4 KiB of them."""
    response_headers_truncated: bool = False
    """The response had more headers than the 4 KiB kept."""
