"""Every record the services write: its JSON is valid under its schema and parses back."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import BaseModel, ValidationError

from webhooks.delivery import AttemptRecord, AttemptSummary, DeliveryTask
from webhooks.endpoints import Endpoint, EndpointSecret
from webhooks.envelope import Envelope, Timestamp
from webhooks.json_schema import SchemaError, validate
from webhooks.record import JsonRecord
from webhooks.signing import generate_secret

STARTED = datetime(2026, 11, 22, 10, 30, 0, 123456, tzinfo=UTC)


def envelope() -> Envelope:
    return Envelope.create(type="order.shipped", tenant="acme", api_version="2026-11-01",
                           data={"object": {"id": "order_1", "name": "Zoë", "lines": [1, 2.5]}})


def endpoint() -> Endpoint:
    return Endpoint(id="ep_1", tenant="acme", url="https://example.com/hook",
                    events=["order.*"], description="Ünïcode", rate_limit=5,
                    secrets=[EndpointSecret(secret=generate_secret()),
                             EndpointSecret(secret=generate_secret(),
                                            expires=STARTED + timedelta(days=1))],
                    created=STARTED, updated=STARTED + timedelta(seconds=1))


def retried_task() -> DeliveryTask:
    return DeliveryTask.create(envelope(), "ep_1").model_copy(update={
        "attempt": 2, "not_before": STARTED + timedelta(minutes=1),
        "history": [AttemptSummary(attempt=1, timestamp=STARTED, status="failed",
                                   response_status=503, error="http_status")]})


def dead_task() -> DeliveryTask:
    return retried_task().model_copy(update={
        "not_before": None, "dlq_reason": "retries exhausted after 2 attempts",
        "history": [*retried_task().history,
                    AttemptSummary(attempt=2, timestamp=STARTED + timedelta(minutes=1),
                                   status="failed", error="timeout")]})


def attempt() -> AttemptRecord:
    return AttemptRecord(task_id="dlv_1", event_id="evt_1", event_type="order.shipped",
                         endpoint_id="ep_1", tenant="acme", attempt=1, trigger="event",
                         url="https://example.com/hook", status="failed", response_status=503,
                         response_body="busy", error="http_status", latency_ms=12.5,
                         timestamp=STARTED, next_attempt_at=STARTED + timedelta(minutes=1),
                         outcome="retrying")


RECORDS: dict[str, Callable[[], JsonRecord]] = {
    "envelope": envelope,
    "endpoint": endpoint,
    "fresh delivery task": lambda: DeliveryTask.create(envelope(), "ep_1"),
    "retried delivery task": retried_task,
    "dead-lettered task": dead_task,
    "attempt record": attempt,
    "delivered attempt": lambda: attempt().model_copy(update={
        "status": "succeeded", "response_status": 200, "error": None,
        "next_attempt_at": None, "outcome": "delivered"}),
}


@pytest.mark.parametrize("make", RECORDS.values(), ids=RECORDS.keys())
def test_json_is_valid_under_its_schema_and_parses_back(make: Callable[[], JsonRecord]) -> None:
    record = make()
    assert record.schema_name is not None
    raw = record.to_json()
    validate(record.schema_name, json.loads(raw))  # jsonschema, the published contract
    assert type(record).from_json(raw) == record
    assert type(record).validated(raw) == record
    assert type(record).from_json(raw).to_json() == raw


def test_timestamps_are_written_as_utc_micros_with_a_z() -> None:
    document = json.loads(retried_task().to_json())
    assert document["not_before"] == "2026-11-22T10:31:00.123456Z"
    assert document["history"][0]["timestamp"] == "2026-11-22T10:30:00.123456Z"
    assert json.loads(endpoint().to_json())["secrets"][1]["expires"] == \
        "2026-11-23T10:30:00.123456Z"


class Stamped(BaseModel):
    at: Timestamp


@pytest.mark.parametrize("given", [
    "2026-11-22T10:30:00.123456Z",
    "2026-11-22T12:30:00.123456+02:00",
    "2026-11-22T10:30:00.123456",  # naive: UTC
    datetime(2026, 11, 22, 10, 30, 0, 123456),
    datetime(2026, 11, 22, 5, 30, 0, 123456, tzinfo=timezone(timedelta(hours=-5))),
])
def test_a_timestamp_is_held_as_aware_utc(given: object) -> None:
    stamped = Stamped(at=given)  # type: ignore[arg-type]
    assert stamped.at == STARTED and stamped.at.tzinfo is UTC
    assert stamped.model_dump_json() == '{"at":"2026-11-22T10:30:00.123456Z"}'
    assert Stamped.model_validate_json(stamped.model_dump_json()) == stamped


@pytest.mark.parametrize("given", ["yesterday", "", 1700000000, None])
def test_anything_else_is_not_a_timestamp(given: object) -> None:
    with pytest.raises(ValidationError):
        Stamped(at=given)  # type: ignore[arg-type]


def test_the_fast_parse_skips_the_schema_and_the_checked_parse_names_the_field() -> None:
    document = json.loads(DeliveryTask.create(envelope(), "ep_1").to_json())
    document["task_id"] = "not-a-task-id"
    raw = json.dumps(document)
    assert DeliveryTask.from_json(raw).task_id == "not-a-task-id"
    with pytest.raises(SchemaError, match="task_id"):
        DeliveryTask.validated(raw)


def test_endpoint_records_are_always_checked() -> None:
    # Read from a compacted topic any client may write: the fanout's view logs the fields.
    document = json.loads(endpoint().to_json())
    document["secrets"][0]["secret"] = "plain"
    with pytest.raises(SchemaError) as raised:
        Endpoint.from_json(json.dumps(document))
    assert raised.value.fields == ["secrets.0.secret"]
