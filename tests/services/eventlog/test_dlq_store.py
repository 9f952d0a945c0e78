"""DlqStore queries against the real ClickHouse engine, rows laid out as the sink writes
them: gap-free pages below the watermark, and every query shape reads a few granules."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from clickhouse_connect.driver.client import Client

from services.eventlog.cursor import Cursor
from services.eventlog.dlq_store import DeadTaskFilters, DlqStore
from services.eventlog.sink import DLQ_COLUMNS, POSITION_COLUMNS
from tests.services.eventlog.test_event_store import Plan
from tests.support.eventlog import make_event
from webhooks.delivery import DeliveryTask
from webhooks.settings import Settings
from webhooks.topics import Topics

BASE = datetime(2026, 11, 1, tzinfo=UTC)
ROWS = 600_000
PARTITIONS = 6


@pytest.fixture
def store(client: Client, settings: Settings) -> DlqStore:
    return DlqStore(client, Topics.from_settings(settings))


def insert(client: Client, store: DlqStore, tenant: str, rows: list[tuple[int, int, str]],
           watermark: bool = True) -> list[DeliveryTask]:
    """Dead tasks at (partition, offset) for endpoint ``ep_<x>``, as the sink writes them,
    then (optionally) the sink's watermark of each partition."""
    tasks = [DeliveryTask(task_id=f"dlv_{tenant}{p}x{o}", endpoint_id=f"ep_{endpoint}",
                          tenant=tenant, event=make_event(tenant), dlq_reason="exhausted")
             for p, o, endpoint in rows]
    client.insert("dlq", [
        [tenant, p, o, task.task_id, task.endpoint_id, task.event.id, task.event.type, 0,
         "exhausted", None, None, BASE + timedelta(minutes=o), task.to_json().decode()]
        for (p, o, _), task in zip(rows, tasks, strict=True)], column_names=DLQ_COLUMNS)
    if watermark:
        last: dict[int, int] = {}
        for p, o, _ in rows:
            last[p] = max(last.get(p, 0), o + 1)
        client.insert("sink_positions", [[store.topics.dlq, p, o] for p, o in last.items()],
                      column_names=POSITION_COLUMNS)
    return tasks


def page_through(store: DlqStore, tenant: str, filters: DeadTaskFilters, limit: int
                 ) -> list[str]:
    seen: list[str] = []
    cursor = Cursor()
    while True:
        page = store.page(tenant, filters, cursor, limit)
        seen += [json.loads(row)["id"] for row in page.rows]
        cursor = page.cursor
        if not page.has_more:
            return seen


def test_pages_stop_at_the_watermark_and_skip_reinserted_rows(
        client: Client, store: DlqStore) -> None:
    tenant = "deadpages"
    shown = insert(client, store, tenant, [(0, 0, "a"), (1, 0, "b"), (0, 1, "a"), (1, 1, "b")])
    insert(client, store, tenant, [(0, 1, "a")], watermark=False)  # a re-inserted batch
    insert(client, store, tenant, [(0, 2, "a")], watermark=False)  # not visible yet
    assert page_through(store, tenant, DeadTaskFilters(), 1) == [
        shown[0].task_id, shown[2].task_id, shown[1].task_id, shown[3].task_id]
    assert page_through(store, tenant, DeadTaskFilters(endpoint_id="ep_b"), 1) == [
        shown[1].task_id, shown[3].task_id]
    assert store.get(tenant, shown[2].task_id)["id"] == shown[2].task_id  # type: ignore[index]
    assert store.get("someone-else", shown[2].task_id) is None
    assert set(store.tasks_by_id(tenant, [shown[0].task_id, "dlv_nope"])) == {shown[0].task_id}


def test_every_query_shape_reads_a_few_granules(client: Client, store: DlqStore) -> None:
    """EXPLAIN indexes = 1 of each DLQ query, on ~70 granules: half the rows belong to
    `big` (partitions 1 and 4), the rest to 61 small tenants."""
    client.command(
        "INSERT INTO dlq (tenant, kafka_partition, kafka_offset, task_id, endpoint_id, "
        "event_id, event_type, attempts, reason, dead_lettered_at, task) "
        "SELECT if(number % 2 = 0, 'big', concat('small', toString(number % 61))) AS t, "
        f"if(t = 'big', if(number % 4 = 0, 1, 4), cityHash64(t) % {PARTITIONS}), number, "
        "concat('dlv_', toString(number)), concat('ep_', toString(number % 10)), "
        "concat('evt_', toString(number)), ['order.created', 'invoice.paid'][number % 2 + 1], "
        "6, 'exhausted', toDateTime64('2026-11-01 00:00:00', 6, 'UTC') + number, '{}' "
        f"FROM numbers({ROWS})")
    client.command("OPTIMIZE TABLE dlq FINAL")
    client.command(
        "INSERT INTO sink_positions (topic, kafka_partition, next_offset) "
        "SELECT {topic:String}, kafka_partition, max(kafka_offset) + 1 FROM dlq "
        "GROUP BY kafka_partition", parameters={"topic": store.topics.dlq})
    marks = store.watermarks()
    near_end = Cursor({1: marks[1] - 20_000, 4: marks[4] - 20_000})
    shapes = {
        "first page": store.dead_tasks_query("small7", DeadTaskFilters(), Cursor(), 101),
        "resumed page": store.dead_tasks_query("big", DeadTaskFilters(), near_end, 101),
        "resumed page, endpoint and type": store.dead_tasks_query(
            "big", DeadTaskFilters(endpoint_id="ep_4", types=("order.*",)), near_end, 101),
    }
    for name, (sql, params) in shapes.items():
        plan = Plan.of(client, sql, params)
        assert plan.total >= 70, plan.text
        assert plan.read <= 4 and plan.in_order, (name, plan.text)
    # By id: the tenant by sorting key, then the task_id bloom filter (4 granules).
    by_id = Plan.of(client, *store.dead_task_query("big", ["dlv_123456"]))
    assert by_id.read <= 4, by_id.text
