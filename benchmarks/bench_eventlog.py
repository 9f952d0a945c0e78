"""Eventlog: sink throughput through Kafka, and GET /v1/events latency at 1M and 10M events.

- Sink: SINK_EVENTS envelopes (50 tenants) are produced onto the events topic first,
  then one sink (embedded chDB, batches of ``sink_batch_size``) is started and timed
  until its watermarks cover every record.
- API: loading 10M events through Kafka would take too long here, so the 1M and 10M
  tables are filled with ClickHouse ``INSERT … SELECT … FROM numbers()`` in the layout
  the sink writes (10 tenants over 6 partitions, offsets unique per partition,
  ~330-byte envelopes, `created` out of order), with the sink watermarks set. Requests
  go through the real app (in process, ASGI) for 100-row pages of one tenant: the
  first page, pages resuming at random positions, and pages with a ``type=order.*``
  filter.
"""

from __future__ import annotations

import random
import time
from typing import Any

from fastapi.testclient import TestClient

from benchmarks.context import BenchContext, percentiles
from services.eventlog.app import create_app
from services.eventlog.clickhouse import apply_migrations, create_clickhouse_client
from services.eventlog.cursor import Cursor, cursor_key, request_binding
from services.eventlog.event_store import EventFilters
from services.eventlog.sink import EventLogSink
from webhooks.kafka import create_producer
from webhooks.settings import Settings
from webhooks.topics import Topics

SINK_EVENTS = 200_000
SINK_TARGET = 50_000  # rows/s, the ingest issue's
TENANTS = 10
PARTITIONS = 6
SAMPLES = 200
HEADERS = {"Authorization": "Bearer bench-key"}


def _envelope(n: int, tenant: str) -> bytes:
    return (f'{{"id":"evt_{n:026d}","type":"order.created","api_version":"2026-11-01",'
            f'"created":"2026-11-22T10:{n // 60 % 60:02d}:{n % 60:02d}.000000Z",'
            f'"tenant":"{tenant}","data":{{"object":{{"id":"order_{n}","amount":{n % 9973},'
            f'"currency":"eur","status":"created"}}}}}}').encode()


def bench_sink(context: BenchContext) -> dict[str, Any]:
    settings = context.settings(sink_batch_size=5000, sink_batch_wait=0.5)
    topics = Topics.from_settings(settings)
    producer = create_producer(settings.kafka, **{"linger.ms": 50, "batch.size": 1_000_000})
    for n in range(SINK_EVENTS):
        tenant = f"tenant{n % 50}"
        while True:
            try:
                producer.produce(topics.events, key=tenant.encode(), value=_envelope(n, tenant))
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    assert producer.flush(120) == 0
    client = create_clickhouse_client(settings.clickhouse_url)
    apply_migrations(client, settings.retention_days)

    def sinked() -> int:
        return int(client.query(
            "SELECT sum(n) FROM (SELECT max(next_offset) AS n FROM sink_positions "
            "WHERE topic = {t:String} GROUP BY kafka_partition)",
            parameters={"t": topics.events}).result_rows[0][0] or 0)

    sink = EventLogSink(settings, client=create_clickhouse_client(settings.clickhouse_url))
    started = time.monotonic()
    sink.start()
    first_at = None
    while (done := sinked()) < SINK_EVENTS:
        if first_at is None and done:
            first_at, first_rows = time.monotonic(), done
        time.sleep(0.05)
    finished = time.monotonic()
    sink.stop()
    steady = (SINK_EVENTS - first_rows) / (finished - first_at) if first_at else None
    return {"events": SINK_EVENTS, "batch_size": settings.sink_batch_size,
            "seconds_from_start": round(finished - started, 2),
            "rows_per_s_including_group_join": round(SINK_EVENTS / (finished - started)),
            "rows_per_s_after_first_batch": round(steady) if steady else None}


def _fill(client: Any, start: int, count: int) -> None:
    """Events ``start…start+count`` as the sink would have written them."""
    client.command(
        "INSERT INTO events (tenant, kafka_partition, kafka_offset, id, type, api_version, "
        "created, envelope) "
        f"SELECT concat('tenant', toString(number % {TENANTS})) AS t, "
        f"(number % {TENANTS}) % {PARTITIONS}, number, "
        "concat('evt_', leftPad(toString(number), 26, '0')) AS i, "
        "['order.created', 'order.shipped', 'customer.created', 'invoice.paid'][number % 4 + 1], "
        "'2026-11-01', toDateTime64('2026-11-01 00:00:00', 6, 'UTC') + (number * 7919) % 2592000, "
        "concat('{\"id\":\"', i, '\",\"type\":\"order.created\",\"api_version\":\"2026-11-01\",'"
        ",'\"created\":\"2026-11-22T10:30:00.000000Z\",\"tenant\":\"', t, '\",\"data\":"
        "{\"object\":{\"id\":\"order_', toString(number), '\",\"amount\":', "
        "toString(number % 9973), ',\"currency\":\"eur\",\"status\":\"created\","
        "\"note\":\"', repeat('x', 120), '\"}}}') "
        f"FROM numbers({start}, {count})")


def _watermarks(client: Any, topics: Topics) -> None:
    client.command(
        "INSERT INTO sink_positions (topic, kafka_partition, next_offset) "
        "SELECT {t:String}, kafka_partition, max(kafka_offset) + 1 FROM events "
        "GROUP BY kafka_partition", parameters={"t": topics.events})


def _latencies(api: TestClient, settings: Settings, stored: int) -> dict[str, Any]:
    key = cursor_key(settings)
    rng = random.Random(1)

    def timed(params: dict[str, Any]) -> float:
        began = time.perf_counter()
        response = api.get("/v1/events", params=params, headers=HEADERS)
        elapsed = time.perf_counter() - began
        assert response.status_code == 200 and len(response.json()["data"]) == 100, response.text
        return elapsed

    def resume_at(filters: EventFilters, offset: int) -> str:
        binding = request_binding("events", "tenant0", filters.describe())
        return Cursor({0: offset}).encode(binding, key)

    for _ in range(20):  # warm up caches and code paths
        timed({"limit": 100})
    first = [timed({"limit": 100}) for _ in range(SAMPLES)]
    resumed = [timed({"limit": 100, "cursor": resume_at(
        EventFilters(), rng.randrange(0, stored - 20_000))}) for _ in range(SAMPLES)]
    typed = EventFilters(types=("order.*",))
    filtered = [timed({"limit": 100, "type": "order.*", "cursor": resume_at(
        typed, rng.randrange(0, stored - 20_000))}) for _ in range(SAMPLES)]
    return {"first_page": percentiles(first), "resumed_page": percentiles(resumed),
            "resumed_page_type_filter": percentiles(filtered)}


def bench_api(context: BenchContext) -> dict[str, Any]:
    settings = context.settings(api_keys={"bench-key": "tenant0"}, eventlog_role="api")
    topics = Topics.from_settings(settings)
    client = create_clickhouse_client(settings.clickhouse_url)
    apply_migrations(client, settings.retention_days)
    results: dict[str, Any] = {}
    with TestClient(create_app(settings)) as api:
        stored = 0
        for target, label in ((1_000_000, "1M"), (10_000_000, "10M")):
            began = time.monotonic()
            for start in range(stored, target, 2_000_000):
                _fill(client, start, min(2_000_000, target - start))
            _watermarks(client, topics)
            fill_s = time.monotonic() - began
            stored = target
            results[label] = {"fill_seconds": round(fill_s, 1),
                              "tenant_rows": stored // TENANTS,
                              **_latencies(api, settings, stored)}
    return results


def run(context: BenchContext) -> dict[str, Any]:
    """The sink's rate, then page latencies; the sink target is judged on its steady rate
    (after the first batch: joining a fresh consumer group takes about a second)."""
    sink = bench_sink(context)
    steady = sink["rows_per_s_after_first_batch"]
    return {"sink": sink, "get_events_100_rows": bench_api(context),
            "targets": [{"target": "sink_rows_per_s", "goal": SINK_TARGET, "measured": steady,
                         "met": steady is not None and steady >= SINK_TARGET}]}
