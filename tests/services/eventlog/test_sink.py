"""The sink against a real broker and ClickHouse: what lands where, and replays after a crash."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from clickhouse_connect.driver.client import Client
from prometheus_client import REGISTRY

from services.eventlog.clickhouse import apply_migrations, create_clickhouse_client
from services.eventlog.sink import EventLogSink, _id_literal
from tests.support.backends import with_database
from tests.support.eventlog import (
    SinkDyingBeforeCommit,
    eventually,
    make_event,
    publish_attempts,
    publish_events,
    rows_written,
)
from webhooks.acked_producer import AckedProducer
from webhooks.delivery import AttemptRecord, AttemptSummary, DeliveryTask
from webhooks.endpoints import Endpoint, EndpointSecret
from webhooks.kafka import create_producer
from webhooks.settings import Settings
from webhooks.signing import generate_secret
from webhooks.topics import Topics


@pytest.fixture(scope="module")
def sink_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"sink_batch_wait": 0.1, "sink_batch_size": 100})


@pytest.fixture(scope="module")
def client(sink_settings: Settings) -> Iterator[Client]:
    client = create_clickhouse_client(sink_settings.clickhouse_url)
    apply_migrations(client, sink_settings.retention_days)
    yield client


def duplicates_skipped() -> float:
    return REGISTRY.get_sample_value("eventlog_sink_duplicate_events_total") or 0.0


def count(client: Client, sql: str) -> int:
    return int(client.query(sql).result_rows[0][0])


def stored_ids(client: Client, tenant: str) -> list[str]:
    """The ids of ``tenant``'s stored events, in Kafka order."""
    return [row[0] for row in client.query(
        "SELECT id FROM events WHERE tenant = {t:String} ORDER BY kafka_partition, kafka_offset",
        parameters={"t": tenant}).result_rows]


def watermark_total(client: Client, topic: str) -> int:
    """Records the sink has passed on ``topic`` (topics start at offset 0 here)."""
    return int(client.query(
        "SELECT sum(next_offset) FROM (SELECT kafka_partition, max(next_offset) AS next_offset "
        "FROM sink_positions WHERE topic = {t:String} GROUP BY kafka_partition)",
        parameters={"t": topic}).result_rows[0][0])


def test_sink_writes_each_topic_and_skips_undecodable_records(
        sink_settings: Settings, client: Client) -> None:
    topics = Topics.from_settings(sink_settings)
    producer = AckedProducer(sink_settings.kafka)
    endpoint = Endpoint(id="ep_sink1", tenant="acme", url="https://example.com/h",
                        events=["order.*"], secrets=[EndpointSecret(secret=generate_secret())],
                        created="2026-11-22T10:00:00.000000Z",
                        updated="2026-11-22T10:00:00.000000Z")
    producer.send(topics.endpoints, endpoint.to_json(), key=b"ep_sink1")
    disabled = endpoint.model_copy(update={"disabled": True, "disabled_reason": "410 Gone"})
    producer.send(topics.endpoints, disabled.to_json(), key=b"ep_sink1")
    producer.send(topics.endpoints, endpoint.model_copy(update={"id": "ep_gone"}).to_json(),
                  key=b"ep_gone")
    producer.send(topics.endpoints, None, key=b"ep_gone")  # tombstone
    producer.send(topics.events, b"not json", key=b"acme")
    events = publish_events(sink_settings, [make_event("acme") for _ in range(5)])
    publish_attempts(sink_settings, [AttemptRecord(
        task_id="dlv_1", event_id=events[0].id, event_type=events[0].type,
        endpoint_id="ep_sink1", tenant="acme", attempt=1, trigger="event",
        url=endpoint.url, status="failed", response_status=503, latency_ms=3.0,
        next_attempt_at="2026-11-22T10:01:00.000000Z", outcome="retrying")])
    skipped_before = REGISTRY.get_sample_value(
        "eventlog_sink_skipped_total", {"topic": topics.events}) or 0.0

    sink = EventLogSink(sink_settings, group="sink-test-1").start()
    try:
        eventually(lambda: count(client, "SELECT count() FROM attempts") == 1
                   and count(client, "SELECT count() FROM events") == 5
                   and watermark_total(client, topics.endpoints) == 4)
    finally:
        sink.stop()
    assert not sink.alive and sink.failure is None
    latest = dict(client.query(
        "SELECT id, argMax(tuple(deleted, record), kafka_offset) FROM endpoints GROUP BY id"
    ).result_rows)
    assert latest["ep_gone"][0] == 1  # deleted
    assert Endpoint.from_json(latest["ep_sink1"][1]).disabled_reason == "410 Gone"
    assert REGISTRY.get_sample_value(
        "eventlog_sink_skipped_total", {"topic": topics.events}) == skipped_before + 1
    # The watermark passed every record, the undecodable one included (it stays on Kafka).
    assert watermark_total(client, topics.events) == 6
    row = client.query("SELECT response_status, next_attempt_at, outcome FROM attempts"
                       ).result_rows[0]
    assert row[0] == 503 and row[2] == "retrying" and row[1].minute == 1


def test_a_crash_between_insert_and_commit_is_replayed_without_loss(
        sink_settings: Settings, client: Client) -> None:
    """Rows inserted but not committed are read and inserted again by the next sink."""
    tenant = "replay"
    events = publish_events(sink_settings, [make_event(tenant) for _ in range(250)])
    before = rows_written("events")
    dying = SinkDyingBeforeCommit(sink_settings, group="sink-test-2").start()
    try:
        eventually(lambda: dying.uncommitted >= 250)
    finally:
        dying.stop()
    by_dying = rows_written("events") - before
    assert by_dying >= 250
    more = publish_events(sink_settings, [make_event(tenant) for _ in range(50)])
    duplicates_before = duplicates_skipped()
    sink = EventLogSink(sink_settings, group="sink-test-2").start()
    try:
        eventually(lambda: rows_written("events") - before >= by_dying + 50)
    finally:
        sink.stop()
    # Nothing was committed, so the next sink read everything again: it recognised the
    # events already stored and inserted only the new 50.
    assert rows_written("events") - before == by_dying + 50
    assert duplicates_skipped() - duplicates_before >= by_dying  # (+ earlier tests' events)
    assert stored_ids(client, tenant) == [e.id for e in events + more]


def test_an_event_appended_twice_is_stored_once(
        sink_settings: Settings, client: Client) -> None:
    """The same event id at a later offset (a producer's retry, ingest re-appending after a
    crash) is kept at its first position only: within one batch and across batches."""
    tenant = "twice"
    first, second, third, fourth = (make_event(tenant) for _ in range(4))
    publish_events(sink_settings, [first, second, first, third])
    sink = EventLogSink(sink_settings, group="sink-test-twice").start()
    stored_count = "SELECT count() FROM events WHERE tenant = 'twice'"
    try:
        eventually(lambda: count(client, stored_count) == 3)
        # One tenant, one partition: once `fourth` is stored, the copies before it were read.
        publish_events(sink_settings, [second, first, fourth])
        eventually(lambda: count(client, stored_count) == 4)
    finally:
        sink.stop()
    assert stored_ids(client, tenant) == [first.id, second.id, third.id, fourth.id]


def test_ids_outside_the_schema_alphabet_are_looked_up_bound_not_spliced() -> None:
    assert _id_literal(["evt_a", "evt_b-1_c"]) == ("evt_a,evt_b-1_c", [])
    odd = ["evt_a,b", "evt_o'hara", "evt_x\\y", ""]
    assert _id_literal(["evt_a", *odd]) == ("evt_a", odd)


def test_an_unchecked_record_with_an_odd_id_is_deduplicated_like_any_other(
        sink_settings: Settings, client: Client) -> None:
    """A record written straight to the events topic (no schema check) whose id holds a
    comma, a quote or a backslash: stored once, and nothing else is mistaken for it."""
    tenant = "odd-ids"
    plain = make_event(tenant)
    odd = [make_event(tenant).model_copy(update={"id": f"evt_{n}{text}"})
           for n, text in enumerate([",", "',", "\\'"])]
    publish_events(sink_settings, [plain, *odd])
    sink = EventLogSink(sink_settings, group="sink-test-odd-ids").start()
    stored_count = f"SELECT count() FROM events WHERE tenant = '{tenant}'"
    try:
        eventually(lambda: count(client, stored_count) == 4)
        fresh = make_event(tenant)
        publish_events(sink_settings, [*odd, plain, fresh])
        eventually(lambda: count(client, stored_count) == 5)
    finally:
        sink.stop()
    assert stored_ids(client, tenant) == [plain.id, *(e.id for e in odd), fresh.id]


def test_failed_inserts_are_retried_from_kafka_without_loss(sink_settings: Settings) -> None:
    """ClickHouse refuses the inserts (no tables yet): the sink commits nothing, re-reads
    the batch and writes it once the tables exist."""
    database = f"late{uuid.uuid4().hex[:8]}"
    late = create_clickhouse_client(with_database(sink_settings.clickhouse_url, database))
    events = publish_events(sink_settings, [make_event("late") for _ in range(30)])
    failures = REGISTRY.get_sample_value("eventlog_sink_insert_failures_total") or 0.0
    sink = EventLogSink(sink_settings, client=late, group="sink-test-3").start()
    try:
        eventually(lambda: (REGISTRY.get_sample_value("eventlog_sink_insert_failures_total")
                            or 0.0) > failures)
        apply_migrations(late, sink_settings.retention_days)
        eventually(lambda: count(late, "SELECT uniqExact(id) FROM events "
                                       "WHERE tenant = 'late'") == 30, timeout=40)
    finally:
        sink.stop()
    assert sink.failure is None
    stored = late.query("SELECT id FROM events WHERE tenant = 'late' "
                        "ORDER BY kafka_partition, kafka_offset").result_rows
    assert sorted({r[0] for r in stored}) == sorted(e.id for e in events)


def test_dead_tasks_land_in_the_dlq_table_once_each(
        sink_settings: Settings, client: Client) -> None:
    """Dead tasks from the DLQ topic are stored with their history, last error and the
    time they were dead-lettered (the record's timestamp); the same task dead-lettered
    again (a fanout that crashed before committing) is stored once; an undecodable
    record is skipped and left on the topic."""
    topics = Topics.from_settings(sink_settings)
    producer = create_producer(sink_settings.kafka)
    dead_at = datetime(2026, 11, 20, 12, 0, 0, 123000, tzinfo=UTC)
    history = [AttemptSummary(attempt=1, timestamp=dead_at - timedelta(seconds=2),
                              status="failed", error="timeout"),
               AttemptSummary(attempt=2, timestamp=dead_at - timedelta(seconds=1),
                              status="failed", response_status=502, error="http_status")]
    tasks = [DeliveryTask(task_id=f"dlv_sinkdead{n}", endpoint_id="ep_dead", tenant="dead",
                          event=make_event("dead", "order.created"), attempt=2,
                          history=history, dlq_reason="retries exhausted after 2 attempts")
             for n in range(2)]
    for value in (tasks[0].to_json(), b"not a task", tasks[1].to_json(), tasks[0].to_json()):
        producer.produce(topics.dlq, key=b"ep_dead", value=value,
                         timestamp=int(dead_at.timestamp() * 1000))
    assert producer.flush(30) == 0
    skipped_before = REGISTRY.get_sample_value(
        "eventlog_sink_skipped_total", {"topic": topics.dlq}) or 0.0

    sink = EventLogSink(sink_settings, group="sink-test-dlq").start()
    try:
        eventually(lambda: watermark_total(client, topics.dlq) >= 4)
    finally:
        sink.stop()
    rows = client.query(
        "SELECT task_id, endpoint_id, event_id, event_type, attempts, reason, last_error, "
        "last_response_status, dead_lettered_at, task FROM dlq WHERE tenant = 'dead' "
        "ORDER BY kafka_partition, kafka_offset").result_rows
    assert [r[0] for r in rows] == ["dlv_sinkdead0", "dlv_sinkdead1"]
    assert rows[0][1:8] == ("ep_dead", tasks[0].event.id, "order.created", 2,
                            "retries exhausted after 2 attempts", "http_status", 502)
    assert rows[0][8].replace(tzinfo=UTC) == dead_at
    assert DeliveryTask.from_json(rows[0][9]) == tasks[0]  # the task as it was on the topic
    assert REGISTRY.get_sample_value(
        "eventlog_sink_skipped_total", {"topic": topics.dlq}) == skipped_before + 1
