"""The eventlog's own gauges on ``/metrics`` against the real broker and ClickHouse: DLQ
depth, endpoints by state, ClickHouse's memory, sink lag and consumer group lag, and that
they move."""

from __future__ import annotations

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from tests.services.eventlog.conftest import ACME
from tests.services.eventlog.test_dlq_api import dead_task, publish_dead
from tests.support.eventlog import eventually
from webhooks.settings import Settings
from webhooks.topics import Topics


def samples(api: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = api.get("/metrics")
    assert response.status_code == 200
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.text)
            for s in family.samples}


def value(api: TestClient, name: str, **labels: str) -> float | None:
    return samples(api).get((name, tuple(sorted(labels.items()))))


def test_gauges_exist_and_move(api: TestClient, eventlog_settings: Settings) -> None:
    topics = Topics.from_settings(eventlog_settings)
    assert value(api, "webhooks_dlq_depth") == 0
    assert value(api, "webhooks_endpoints", state="enabled") == 0
    for topic in (topics.events, topics.attempts, topics.endpoints, topics.dlq):
        assert value(api, "webhooks_sink_lag", topic=topic) is not None

    created = api.post("/v1/endpoints", headers=ACME, json={
        "url": "https://hooks.example.com/a", "events": ["*"]})
    endpoint_id = created.json()["id"]
    assert value(api, "webhooks_endpoints", state="enabled") == 1
    api.patch(f"/v1/endpoints/{endpoint_id}", headers=ACME, json={"disabled": True})
    assert value(api, "webhooks_endpoints", state="disabled") == 1
    assert value(api, "webhooks_endpoints", state="enabled") == 0

    publish_dead(eventlog_settings, [dead_task("acme", endpoint_id) for _ in range(2)])
    eventually(lambda: value(api, "webhooks_dlq_depth") == 2)

    # The sink's own group commits its offsets: its lag is listed per topic it reads.
    sink_group = f"{eventlog_settings.topic_prefix}.eventlog-sink"
    eventually(lambda: value(api, "webhooks_consumer_group_lag", group=sink_group,
                             topic=topics.dlq) is not None)
    eventually(lambda: value(api, "webhooks_sink_lag", topic=topics.dlq) == 0)
    assert (value(api, "eventlog_sink_rows_total", table="dlq") or 0) >= 2


def test_clickhouse_memory_is_exported(api: TestClient) -> None:
    # The engine has run queries and holds the tables' parts: it tracks some memory, and
    # its caches are part of what it tracks.
    tracked = value(api, "webhooks_clickhouse_memory_bytes", kind="tracked")
    caches = value(api, "webhooks_clickhouse_memory_bytes", kind="caches")
    assert tracked is not None and tracked > 0
    assert caches is not None and 0 <= caches <= tracked
