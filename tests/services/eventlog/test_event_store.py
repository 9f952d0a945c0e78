"""EventStore queries against the real ClickHouse engine, rows written as the sink writes them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client

from services.eventlog.cursor import Cursor
from services.eventlog.event_store import AttemptFilters, EventFilters, EventStore
from services.eventlog.sink import EVENT_COLUMNS, POSITION_COLUMNS
from webhooks.settings import Settings
from webhooks.topics import Topics

BASE = datetime(2026, 11, 1, tzinfo=UTC)


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


ROWS = 1_200_000
SMALL_TENANTS = 61
# Per table, partition of each small tenant (the topics are keyed by tenant / endpoint id).
PARTITIONS = 6


def _fill_for_explain(client: Client, store: EventStore) -> None:
    """1.2M events and 1.2M attempts in the layout the sink writes, ~150 granules each.

    Half of the rows belong to the tenant `big`, spread over partitions 1 and 4 (as a
    tenant is when the partition count changes); the other half to 61 small tenants, one
    partition each. Offsets rise per partition; `created` is out of order. Each event of
    `big` has three attempts, at three of its ten endpoints.
    """
    client.command(
        "INSERT INTO events (tenant, kafka_partition, kafka_offset, id, type, api_version, "
        "created, envelope) "
        f"SELECT if(number % 2 = 0, 'big', concat('small', toString(number % {SMALL_TENANTS}))) "
        f"AS t, if(t = 'big', if(number % 4 = 0, 1, 4), cityHash64(t) % {PARTITIONS}), number, "
        "concat('evt_', leftPad(toString(number), 26, '0')), "
        "['order.created', 'order.shipped', 'customer.created', 'invoice.paid'][number % 4 + 1], "
        "'2026-11-01', toDateTime64('2026-11-01 00:00:00', 6, 'UTC') + (number * 7919) % 2592000, "
        f"'{{}}' FROM numbers({ROWS})")
    client.command(
        "INSERT INTO attempts (tenant, endpoint_id, kafka_partition, kafka_offset, id, task_id, "
        "event_id, event_type, attempt, trigger, url, status, latency_ms, timestamp) "
        f"SELECT if(number % 2 = 0, 'big', concat('small', toString(number % {SMALL_TENANTS}))) "
        "AS t, concat('ep_', toString(number % 10)) AS e, "
        f"cityHash64(t, e) % {PARTITIONS}, number, concat('att_', toString(number)), 'dlv_1', "
        "concat('evt_', leftPad(toString(intDiv(number, 6)), 26, '0')), 'order.created', 1, "
        "'event', 'https://example.com', ['failed', 'succeeded'][number % 3 % 2 + 1], 1.0, "
        f"now64(6) FROM numbers({ROWS})")
    # One part per table, so the granule counts below do not depend on merge timing.
    client.command("OPTIMIZE TABLE events FINAL")
    client.command("OPTIMIZE TABLE attempts FINAL")
    for topic, table in ((store.topics.events, "events"), (store.topics.attempts, "attempts")):
        client.command(
            "INSERT INTO sink_positions (topic, kafka_partition, next_offset) "
            f"SELECT {{topic:String}}, kafka_partition, max(kafka_offset) + 1 FROM {table} "
            "GROUP BY kafka_partition", parameters={"topic": topic})


@dataclass
class Plan:
    """What EXPLAIN indexes = 1 says about a query's one read of a MergeTree table."""

    text: str
    total: int  # granules of the table
    by_primary_key: int  # granules left after the primary key
    read: int  # granules left after the skip indexes too: what is read
    in_order: bool  # read in sorting key order, so a LIMIT stops the read early

    @classmethod
    def of(cls, client: Client, sql: str, params: dict[str, Any]) -> Plan:
        text = "\n".join(row[0] for row in client.query("EXPLAIN indexes = 1 " + sql,
                                                        parameters=params).result_rows)
        primary = text[text.index("PrimaryKey"):]
        assert "Condition: true" not in primary.split("Granules")[0], text
        by_key, total = re.search(r"Granules: (\d+)/(\d+)", primary).groups()  # type: ignore
        read = re.search(r"Parts: \d+ \| Granules: (\d+)", text).group(1)  # type: ignore
        return cls(text, int(total), int(by_key), int(read), "Read type: InOrder" in text)


def test_every_query_shape_reads_a_few_granules(client: Client, store: EventStore) -> None:
    """EXPLAIN indexes = 1 of each query the API runs, on ~150 granules per table: each
    reads a few granules, far fewer than its tenant holds (the tenant key alone would
    select half of the table for `big`)."""
    _fill_for_explain(client, store)
    events = store.watermarks(store.topics.events)
    attempts = store.watermarks(store.topics.attempts)
    near_end = Cursor({1: events[1] - 20_000, 4: events[4] - 20_000})  # ~5k rows each
    # An event of `big` (in partition 1) with attempts at three of its endpoints.
    event_id = f"evt_{150_000:026d}"
    endpoint = "ep_4"
    endpoint_partition = client.query(
        f"SELECT cityHash64('big', '{endpoint}') % {PARTITIONS}").result_rows[0][0]
    pages = {
        "first page": store.events_query("small7", EventFilters(), Cursor(), 101),
        "resumed page": store.events_query("big", EventFilters(), near_end, 101),
        "resumed page, type prefix": store.events_query(
            "big", EventFilters(types=("order.*",)), near_end, 101),
        "resumed page, created range": store.events_query(
            "big", EventFilters(created_after=BASE + timedelta(days=3),
                                created_before=BASE + timedelta(days=9)), near_end, 101),
        "attempts page": store.attempts_query(
            "big", endpoint, AttemptFilters(status="failed"),
            Cursor({endpoint_partition: attempts[endpoint_partition] - 20_000}), 101),
    }
    for name, (sql, params) in pages.items():
        plan = Plan.of(client, sql, params)
        assert plan.total >= 140, plan.text  # the layout really has many granules
        assert plan.read <= 4 and plan.in_order, (name, plan.text)

    # The first page of a tenant as big as half the table: its granules are all selected
    # (nothing bounds the offsets from below), but read in order, so LIMIT ends the read
    # after the first rows.
    first_big = Plan.of(client, *store.events_query("big", EventFilters(), Cursor(), 101))
    assert first_big.in_order and first_big.read <= first_big.total // 2 + 2

    # By id: the sorting key narrows to the tenant only (ids are not in it); the bloom
    # filter index on id then leaves one index granule (4 granules).
    by_id = Plan.of(client, *store.event_query("big", event_id))
    assert by_id.by_primary_key >= by_id.total // 2 - 2
    assert by_id.read <= 4, by_id.text
    assert store.get_event("big", event_id) is not None
    # Delivery status: one bloom granule (4 granules) per endpoint with attempts (3).
    status = Plan.of(client, *store.delivery_status_query("big", event_id))
    assert 0 < status.read <= 3 * 4, status.text
    assert len(store.delivery_status("big", event_id)) == 3
    # One attempt by id: the sorting key narrows to the endpoint's attempts (a tenth of
    # `big`'s), the bloom filter index on id to one index granule (4 granules).
    attempt_id = "att_600004"  # an even number ending in 4: `big`'s ep_4
    one = Plan.of(client, *store.attempt_query("big", endpoint, attempt_id))
    assert one.by_primary_key >= 5 and one.read <= 4, one.text
    found = store.get_attempt("big", endpoint, attempt_id)
    assert found is not None and found["id"] == attempt_id
    assert (found["request_headers"], found["response_headers"]) == (None, None)
