"""EventStore queries against the real ClickHouse engine, rows written as the sink writes them."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from clickhouse_connect.driver.client import Client

from webhooks.clickhouse import apply_migrations, create_clickhouse_client
from webhooks.cursor import Cursor
from webhooks.eventstore import EventFilters, EventStore
from webhooks.settings import Settings
from webhooks.sink import EVENT_COLUMNS, POSITION_COLUMNS
from webhooks.topics import Topics

BASE = datetime(2026, 11, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[Client]:
    client = create_clickhouse_client(settings.clickhouse_url)
    apply_migrations(client, settings.retention_days)
    yield client


@pytest.fixture
def store(client: Client, settings: Settings) -> EventStore:
    return EventStore(client, Topics.from_settings(settings))


def insert(client: Client, store: EventStore, tenant: str, rows: list[tuple[int, int, str]],
           watermark: bool = True) -> None:
    """Rows of (partition, offset, type) as the sink writes them, then (optionally) the
    sink's watermark for each partition."""
    client.insert("events", [
        [tenant, p, o, f"evt_{tenant}_{p}_{o}", kind, "2026-11-01",
         BASE + timedelta(seconds=(o * 7919) % 1000), f'{{"id":"evt_{tenant}_{p}_{o}"}}']
        for p, o, kind in rows], column_names=EVENT_COLUMNS)
    if watermark:
        last: dict[int, int] = {}
        for p, o, _ in rows:
            last[p] = max(last.get(p, 0), o + 1)
        client.insert("sink_positions", [[store.topics.events, p, o] for p, o in last.items()],
                      column_names=POSITION_COLUMNS)


def ids(rows: list[str]) -> list[str]:
    return [re.search(r'"id":"([^"]+)"', row).group(1) for row in rows]  # type: ignore[union-attr]


def page_through(store: EventStore, tenant: str, cursor: Cursor, limit: int,
                 filters: EventFilters = EventFilters()) -> tuple[list[str], Cursor]:
    seen: list[str] = []
    while True:
        page = store.page_events(tenant, filters, cursor, limit)
        seen += ids(page.rows)
        cursor = page.cursor
        if not page.has_more:
            return seen, cursor


def test_pages_resume_per_partition_without_gaps_or_duplicates(
        client: Client, store: EventStore) -> None:
    """A tenant spread over two partitions: each partition resumes from its own offset."""
    tenant = "spread"
    insert(client, store, tenant, [(0, o, "order.created") for o in range(0, 20, 2)]
           + [(1, o, "order.created") for o in range(5, 12)])
    seen, cursor = page_through(store, tenant, Cursor(), limit=3)
    assert len(seen) == 17 and len(set(seen)) == 17
    assert cursor.positions == {0: 18, 1: 11}
    # Newer rows land in both partitions; the old cursor yields exactly those.
    insert(client, store, tenant, [(1, 12, "order.paid"), (0, 21, "order.paid"),
                                   (1, 13, "order.paid")])
    more, _ = page_through(store, tenant, cursor, limit=2)
    assert sorted(more) == sorted(["evt_spread_1_12", "evt_spread_0_21", "evt_spread_1_13"])


def test_rows_past_the_sink_watermark_are_not_served(client: Client, store: EventStore
                                                     ) -> None:
    """An offset becomes visible only once the sink recorded it (and everything before it)."""
    tenant = "visibility"
    insert(client, store, tenant, [(2, o, "order.created") for o in range(3)])
    # Offset 4 is already visible, offset 3 is not written yet: serving 4 now would let a
    # cursor skip 3 forever. The watermark (4 = next offset after 3) hides 4 until then.
    insert(client, store, tenant, [(2, 4, "order.created")], watermark=False)
    seen, cursor = page_through(store, tenant, Cursor(), limit=10)
    assert seen == ["evt_visibility_2_0", "evt_visibility_2_1", "evt_visibility_2_2"]
    insert(client, store, tenant, [(2, 3, "order.created")], watermark=False)
    insert(client, store, tenant, [(2, 4, "order.created")])  # the sink's replay + watermark
    rest, _ = page_through(store, tenant, cursor, limit=10)
    assert rest == ["evt_visibility_2_3", "evt_visibility_2_4"]


def test_reinserted_batches_show_once_before_merges(client: Client, store: EventStore) -> None:
    tenant = "replayed"
    batch = [(0, o, "order.created") for o in range(10)]
    client.command("SYSTEM STOP MERGES events")  # keep the duplicates unmerged for the test
    try:
        insert(client, store, tenant, batch)
        insert(client, store, tenant, batch)  # the sink re-inserted it after a crash...
        insert(client, store, tenant, batch[:6])  # ...and part of it once more
        raw = client.query("SELECT count() FROM events WHERE tenant = 'replayed'"
                           ).result_rows[0][0]
        assert raw == 26  # the duplicates are really there
        for limit in (1, 3, 4, 100):
            seen, _ = page_through(store, tenant, Cursor(), limit=limit)
            assert seen == [f"evt_replayed_0_{o}" for o in range(10)], limit
        page = store.page_events(tenant, EventFilters(), Cursor(), 9)
        assert len(page.rows) == 9 and page.has_more
    finally:
        client.command("SYSTEM START MERGES events")
    assert store.get_event(tenant, "evt_replayed_0_5") == '{"id":"evt_replayed_0_5"}'
    assert store.get_event("other", "evt_replayed_0_5") is None


def test_type_and_time_filters(client: Client, store: EventStore) -> None:
    tenant = "filtered"
    kinds = ["order.created", "order.line.added", "orders.created", "customer.created"]
    insert(client, store, tenant, [(0, o, kinds[o % 4]) for o in range(40)])
    prefix, _ = page_through(store, tenant, Cursor(), 5, EventFilters(types=("order.*",)))
    assert prefix == [f"evt_filtered_0_{o}" for o in range(40) if o % 4 in (0, 1)]
    both, _ = page_through(store, tenant, Cursor(), 5,
                           EventFilters(types=("customer.created", "orders.created")))
    assert both == [f"evt_filtered_0_{o}" for o in range(40) if o % 4 in (2, 3)]
    # At the end of a listing the cursor skips to the watermark (last offset 39, not the
    # last match 37), so polling with a rare filter does not rescan what was examined.
    rare, end = page_through(store, tenant, Cursor(), 5, EventFilters(types=("order.line.*",)))
    assert rare[-1] == "evt_filtered_0_37" and end.positions[0] == 39
    insert(client, store, tenant, [(0, 40, "order.line.added")])
    assert page_through(store, tenant, end, 5, EventFilters(types=("order.line.*",)))[0] == [
        "evt_filtered_0_40"]
    after, before = BASE + timedelta(seconds=100), BASE + timedelta(seconds=600)
    window, _ = page_through(store, tenant, Cursor(), 5,
                             EventFilters(created_after=after, created_before=before))
    expected = [o for o in range(40) if after < BASE + timedelta(seconds=(o * 7919) % 1000)
                < before]
    assert window == [f"evt_filtered_0_{o}" for o in expected] and 0 < len(expected) < 40


def _granules(plan: str) -> tuple[int, int]:
    """Selected and total granules of the PrimaryKey step of an EXPLAIN indexes=1 plan."""
    section = plan[plan.index("PrimaryKey"):]
    selected, total = re.search(r"Granules: (\d+)/(\d+)", section).groups()  # type: ignore
    return int(selected), int(total)


def test_queries_use_the_primary_index(client: Client, store: EventStore) -> None:
    """The page query selects a few granules by primary key, not the whole table."""
    client.command(
        "INSERT INTO events (tenant, kafka_partition, kafka_offset, id, type, api_version, "
        "created, envelope) SELECT ['big-a', 'big-b', 'big-c'][number % 3 + 1], 0, number, "
        "concat('evt_', toString(number)), 'order.created', '2026-11-01', "
        "toDateTime64('2026-11-01 00:00:00', 6, 'UTC') + number, '{}' FROM numbers(300000)")
    client.command(
        "INSERT INTO attempts (tenant, endpoint_id, kafka_partition, kafka_offset, id, task_id, "
        "event_id, event_type, attempt, trigger, url, status, latency_ms, timestamp) "
        "SELECT ['big-a', 'big-b'][number % 2 + 1], concat('ep_', toString(number % 5)), 0, "
        "number, concat('att_', toString(number)), 'dlv_1', 'evt_1', 'order.created', 1, "
        "'event', 'https://example.com', 'failed', 1.0, now64(6) FROM numbers(200000)")
    client.insert("sink_positions", [[store.topics.events, 0, 300000],
                                     [store.topics.attempts, 0, 200000]],
                  column_names=POSITION_COLUMNS)
    cases = [
        store.events_query("big-b", EventFilters(), Cursor(), 100),
        store.events_query("big-b", EventFilters(types=("order.*",)), Cursor({0: 150001}), 100),
        store.events_query("big-c", EventFilters(created_after=BASE), Cursor({0: 5}), 1000),
        store.attempts_query("big-b", "ep_1", "failed", Cursor({0: 10}), 100),
    ]
    for sql, params in cases:
        plan = "\n".join(row[0] for row in
                         client.query("EXPLAIN indexes = 1 " + sql, parameters=params).result_rows)
        assert "Condition: true" not in plan.split("PrimaryKey", 1)[1].split("Granules")[0]
        selected, total = _granules(plan)
        assert selected < total, plan
    sql, params = cases[1]
    plan = "\n".join(row[0] for row in
                     client.query("EXPLAIN indexes = 1 " + sql, parameters=params).result_rows)
    assert _granules(plan)[0] <= 15  # one tenant, from the cursor on: a few granules of ~37
