"""Delivery tasks and attempt records: the messages between matching, delivery and the log.

A :class:`DeliveryTask` (schema ``delivery_task.v1``) is one event for one endpoint. It
travels on the deliveries topic, through the retry tier topics, and ends on the DLQ if
every attempt fails. It never carries the endpoint's URL or secrets: the deliverer
looks the endpoint up when it sends, so a changed URL or rotated secret takes effect
for retries too. Every attempt produces an :class:`AttemptRecord` (``attempt.v1``).
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from ulid import ULID

from webhooks.envelope import Envelope, format_timestamp, utcnow
from webhooks.json_schema import validate

DELIVERY_TASK_SCHEMA = "delivery_task.v1"
ATTEMPT_SCHEMA = "attempt.v1"

Trigger = Literal["event", "redeliver", "recover", "test"]
AttemptStatus = Literal["succeeded", "failed"]
Outcome = Literal["delivered", "retrying", "dead_lettered", "endpoint_disabled", "dropped"]


class _Message(BaseModel):
    """A JSON message validated against its schema on the way in and out."""

    model_config = ConfigDict(extra="forbid")
    schema_name: str = Field(default="", exclude=True, repr=False)

    @classmethod
    def from_json(cls, raw: bytes | str) -> Any:
        document = json.loads(raw)
        validate(cls.model_fields["schema_name"].default, document)
        return cls.model_validate(document)

    def to_json(self) -> bytes:
        document = self.model_dump(mode="json", exclude={"schema_name"})
        validate(self.schema_name, document)
        return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


class AttemptSummary(BaseModel):
    """What a task remembers of each attempt it went through."""

    model_config = ConfigDict(extra="forbid")

    attempt: int
    timestamp: str
    status: AttemptStatus
    response_status: int | None = None
    error: str | None = None


class DeliveryTask(_Message):
    """One event to deliver to one endpoint."""

    schema_name: str = Field(default=DELIVERY_TASK_SCHEMA, exclude=True, repr=False)

    task_id: str
    endpoint_id: str
    tenant: str
    event: Envelope
    attempt: int = 1
    not_before: str | None = None
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


class AttemptRecord(_Message):
    """One HTTP attempt, as published on the attempts topic."""

    schema_name: str = Field(default=ATTEMPT_SCHEMA, exclude=True, repr=False)

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
    timestamp: str = Field(default_factory=lambda: format_timestamp(utcnow()))
    next_attempt_at: str | None = None
    outcome: Outcome
