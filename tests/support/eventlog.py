"""Helpers for event log tests: publish onto the real topics, poll the API until it caught up."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from confluent_kafka import Consumer, Producer
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from services.eventlog.sink import Batch, EventLogSink
from webhooks.delivery import AttemptRecord
from webhooks.envelope import Envelope
from webhooks.kafka import create_producer
from webhooks.settings import Settings
from webhooks.topics import Topics

API_VERSION = "2026-11-01"


def make_event(tenant: str, type: str = "order.created", created: datetime | None = None,
               **data: Any) -> Envelope:
    return Envelope.create(type=type, tenant=tenant, api_version=API_VERSION, created=created,
                           data={"object": data or {"n": 0}})


def publish_events(settings: Settings, events: Iterable[Envelope],
                   producer: Producer | None = None) -> list[Envelope]:
    """Produce envelopes onto the events topic keyed by tenant, as ingest does; wait for acks."""
    producer = producer or create_producer(settings.kafka)
    topic = Topics.from_settings(settings).events
    sent = []
    for event in events:
        producer.produce(topic, key=event.tenant.encode(), value=event.to_json())
        producer.poll(0)
        sent.append(event)
    assert producer.flush(30) == 0, "Kafka did not acknowledge every event"
    return sent


def publish_attempts(settings: Settings, attempts: Iterable[AttemptRecord]) -> None:
    producer = create_producer(settings.kafka)
    topic = Topics.from_settings(settings).attempts
    for attempt in attempts:
        producer.produce(topic, key=attempt.endpoint_id.encode(), value=attempt.to_json())
    assert producer.flush(30) == 0


def page_all(client: TestClient, headers: dict[str, str], cursor: str | None = None,
             **params: Any) -> tuple[list[dict[str, Any]], str]:
    """Page until has_more is false; return every envelope and the last cursor."""
    seen: list[dict[str, Any]] = []
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = client.get("/v1/events", params=query, headers=headers)
        assert response.status_code == 200, response.text
        body = response.json()
        seen += body["data"]
        cursor = body["next_cursor"]
        if not body["has_more"]:
            return seen, cursor


def eventually(check: Callable[[], Any], timeout: float = 30.0, interval: float = 0.1) -> Any:
    """Return ``check()``'s first truthy value; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last: {value!r})")
        time.sleep(interval)


class SinkDyingBeforeCommit(EventLogSink):
    """A sink that inserts every batch but never gets to commit its offsets, as if the
    process were killed between the ClickHouse insert and the Kafka commit."""

    uncommitted = 0

    def commit(self, consumer: Consumer, batch: Batch) -> None:
        self.uncommitted += batch.size


def rows_written(table: str) -> float:
    """How many rows every sink of this process inserted into ``table`` so far."""
    return REGISTRY.get_sample_value("eventlog_sink_rows_total", {"table": table}) or 0.0
