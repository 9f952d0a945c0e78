import json

import pytest
from pydantic import ValidationError

from webhooks.delivery import AttemptRecord, AttemptSummary, DeliveryTask
from webhooks.envelope import Envelope
from webhooks.json_schema import SchemaError


def event() -> Envelope:
    return Envelope.create(type="order.shipped", data={}, tenant="acme", api_version="2026-11-01")


def test_task_round_trip() -> None:
    task = DeliveryTask.create(event(), "ep_1", trigger="redeliver")
    task.history.append(AttemptSummary(attempt=1, timestamp="2026-11-22T00:00:00.000000Z",
                                       status="failed", response_status=500))
    again = DeliveryTask.from_json(task.to_json())
    assert again == task
    assert again.key == b"ep_1"
    assert "schema_name" not in json.loads(task.to_json())


def test_task_schema_rejects_bad_event() -> None:
    document = json.loads(DeliveryTask.create(event(), "ep_1").to_json())
    document["event"]["type"] = "NOT VALID"
    with pytest.raises(SchemaError, match="event.type"):
        DeliveryTask.validated(json.dumps(document))


def test_attempt_round_trip() -> None:
    record = AttemptRecord(task_id="dlv_1", event_id="evt_1", event_type="order.shipped",
                           endpoint_id="ep_1", tenant="acme", attempt=2, trigger="event",
                           url="https://example.com/", status="failed", response_status=503,
                           response_body="x" * 10, error="http_status", latency_ms=12.5,
                           outcome="retrying")
    assert AttemptRecord.from_json(record.to_json()) == record
    with pytest.raises(SchemaError):
        AttemptRecord(**{**record.model_dump(), "response_body": "x" * 2000}).check_schema()


def test_attempt_without_outcome_is_rejected_by_the_schema() -> None:
    record = AttemptRecord(task_id="dlv_1", event_id="evt_1", event_type="order.shipped",
                           endpoint_id="ep_1", tenant="acme", attempt=1, trigger="event",
                           url="https://example.com/", status="succeeded", latency_ms=3.0,
                           outcome="delivered")
    document = json.loads(record.to_json())
    del document["outcome"]
    with pytest.raises(SchemaError, match="outcome"):
        AttemptRecord.validated(json.dumps(document))
    with pytest.raises(ValidationError, match="outcome"):
        AttemptRecord.from_json(json.dumps(document))
