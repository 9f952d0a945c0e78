"""Queries of the event log in ClickHouse: event pages, single events, delivery attempts.

Every listing is ordered by Kafka position and resumes from a :class:`~webhooks.cursor.Cursor`
(the last offset served per partition). Three rules make pages gap-free and
duplicate-free while the sink is writing:

- only rows below the sink's per-partition watermark (``sink_positions``) are served,
  so a page never runs ahead of an offset that is not yet visible;
- each partition's rows are served in offset order from just after the cursor;
- ``LIMIT 1 BY kafka_partition, kafka_offset`` hides a re-inserted batch before merges.

Conditions are plain bounds on the sorting key (tenant, partition, offset ranges): in
chDB a tuple comparison ``(p, o) > (x, y)`` alone did not use the primary index.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from clickhouse_connect.driver.client import Client

from webhooks.cursor import Cursor
from webhooks.topics import Topics


def clickhouse_time(moment: datetime) -> str:
    """A DateTime64(6) literal for a query parameter, in UTC."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


@dataclass(frozen=True)
class EventFilters:
    """What a listing of events is restricted to; ``types`` are OR-ed type filters."""

    types: tuple[str, ...] = ()
    created_after: datetime | None = None
    created_before: datetime | None = None

    def describe(self) -> dict[str, Any]:
        """The filters as a plain dict: what a cursor is bound to."""
        return {"types": list(self.types),
                "created_after": self.created_after and self.created_after.isoformat(),
                "created_before": self.created_before and self.created_before.isoformat()}


@dataclass
class Page:
    """One page of rows (raw JSON documents), whether more follow, and where to resume."""

    rows: list[str]
    has_more: bool
    cursor: Cursor
    positions: list[tuple[int, int]] = field(default_factory=list)


def _position_ranges(cursor: Cursor, watermarks: dict[int, int]) -> str:
    """``(partition = p AND offset > after AND offset < watermark) OR …`` for visible rows."""
    clauses = []
    for partition, next_offset in sorted(watermarks.items()):
        clause = f"(kafka_partition = {int(partition)} AND kafka_offset < {int(next_offset)}"
        if partition in cursor.positions:
            clause += f" AND kafka_offset > {int(cursor.positions[partition])}"
        clauses.append(clause + ")")
    return "(" + " OR ".join(clauses) + ")" if clauses else "0"


def _type_condition(types: tuple[str, ...], params: dict[str, Any]) -> str:
    if not types or "*" in types:
        return "1"
    clauses = []
    for index, pattern in enumerate(types):
        name = f"type_{index}"
        if pattern.endswith(".*"):
            params[name] = pattern[:-1]
            clauses.append(f"startsWith(type, {{{name}:String}})")
        else:
            params[name] = pattern
            clauses.append(f"type = {{{name}:String}}")
    return "(" + " OR ".join(clauses) + ")"


class EventStore:
    """Read side of the event log, scoped by tenant on every query."""

    def __init__(self, client: Client, topics: Topics) -> None:
        self.client = client
        self.topics = topics

    def watermarks(self, topic: str) -> dict[int, int]:
        """Per partition of ``topic``, the next offset the sink will write (rows below show)."""
        result = self.client.query(
            "SELECT kafka_partition, max(next_offset) FROM sink_positions "
            "WHERE topic = {topic:String} GROUP BY kafka_partition",
            parameters={"topic": topic})
        return {int(p): int(o) for p, o in result.result_rows}

    def events_query(self, tenant: str, filters: EventFilters, cursor: Cursor, limit: int
                     ) -> tuple[str, dict[str, Any]]:
        """The SQL and parameters of one page of events (exposed for EXPLAIN checks)."""
        params: dict[str, Any] = {"tenant": tenant}
        conditions = ["tenant = {tenant:String}",
                      _position_ranges(cursor, self.watermarks(self.topics.events)),
                      _type_condition(filters.types, params)]
        if filters.created_after is not None:
            params["created_after"] = clickhouse_time(filters.created_after)
            conditions.append("created > {created_after:DateTime64(6, 'UTC')}")
        if filters.created_before is not None:
            params["created_before"] = clickhouse_time(filters.created_before)
            conditions.append("created < {created_before:DateTime64(6, 'UTC')}")
        sql = (
            "SELECT kafka_partition, kafka_offset, envelope FROM events "
            f"WHERE {' AND '.join(conditions)} "
            "ORDER BY kafka_partition, kafka_offset "
            "LIMIT 1 BY kafka_partition, kafka_offset "
            f"LIMIT {int(limit) + 1}"
        )
        return sql, params

    def page_events(self, tenant: str, filters: EventFilters, cursor: Cursor, limit: int
                    ) -> Page:
        """Up to ``limit`` envelopes (raw JSON) after ``cursor``, oldest position first."""
        sql, params = self.events_query(tenant, filters, cursor, limit)
        rows = self.client.query(sql, parameters=params).result_rows
        served = rows[:limit]
        positions = [(int(p), int(o)) for p, o, _ in served]
        return Page(rows=[envelope for _, _, envelope in served], has_more=len(rows) > limit,
                    cursor=cursor.advanced(positions), positions=positions)

    def iter_events(self, tenant: str, filters: EventFilters, chunk: int = 1000
                    ) -> Iterator[str]:
        """Every visible matching envelope (raw JSON), in position order, page by page."""
        cursor = Cursor()
        while True:
            page = self.page_events(tenant, filters, cursor, chunk)
            yield from page.rows
            if not page.has_more:
                return
            cursor = page.cursor

    def get_event(self, tenant: str, event_id: str) -> str | None:
        """The envelope (raw JSON) of one of ``tenant``'s events, or None."""
        rows = self.client.query(
            "SELECT envelope FROM events WHERE tenant = {tenant:String} AND id = {id:String} "
            "ORDER BY kafka_partition, kafka_offset LIMIT 1",
            parameters={"tenant": tenant, "id": event_id}).result_rows
        return rows[0][0] if rows else None

    def delivery_status(self, tenant: str, event_id: str) -> list[dict[str, Any]]:
        """Per endpoint: attempts so far and the latest attempt's result, for one event."""
        result = self.client.query(
            "SELECT endpoint_id, count() AS attempts, "
            "countIf(status = 'succeeded') > 0 AS delivered, "
            "argMax(status, (timestamp, attempt)) AS last_status, "
            "argMax(response_status, (timestamp, attempt)) AS last_response_status, "
            "argMax(error, (timestamp, attempt)) AS last_error, "
            "argMax(outcome, (timestamp, attempt)) AS last_outcome, "
            "argMax(next_attempt_at, (timestamp, attempt)) AS next_attempt_at, "
            "max(timestamp) AS last_attempt_at "
            "FROM (SELECT * FROM attempts WHERE tenant = {tenant:String} "
            "      AND event_id = {event:String} LIMIT 1 BY id) "
            "GROUP BY endpoint_id ORDER BY endpoint_id",
            parameters={"tenant": tenant, "event": event_id})
        return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]

    def attempts_query(self, tenant: str, endpoint_id: str, status: str | None, cursor: Cursor,
                       limit: int) -> tuple[str, dict[str, Any]]:
        """The SQL and parameters of one page of an endpoint's attempts."""
        params: dict[str, Any] = {"tenant": tenant, "endpoint": endpoint_id}
        conditions = ["tenant = {tenant:String}", "endpoint_id = {endpoint:String}",
                      _position_ranges(cursor, self.watermarks(self.topics.attempts))]
        if status is not None:
            params["status"] = status
            conditions.append("status = {status:String}")
        sql = (
            "SELECT kafka_partition, kafka_offset, id, task_id, event_id, event_type, attempt, "
            "trigger, url, status, response_status, response_body, error, latency_ms, "
            "timestamp, next_attempt_at, outcome FROM attempts "
            f"WHERE {' AND '.join(conditions)} "
            "ORDER BY kafka_partition, kafka_offset "
            "LIMIT 1 BY kafka_partition, kafka_offset "
            f"LIMIT {int(limit) + 1}"
        )
        return sql, params

    def page_attempts(self, tenant: str, endpoint_id: str, status: str | None, cursor: Cursor,
                      limit: int) -> Page:
        """Up to ``limit`` attempts (as JSON documents) of one endpoint after ``cursor``."""
        sql, params = self.attempts_query(tenant, endpoint_id, status, cursor, limit)
        result = self.client.query(sql, parameters=params)
        served = result.result_rows[:limit]
        positions = [(int(row[0]), int(row[1])) for row in served]
        rows = [json.dumps(_attempt_document(result.column_names[2:], row[2:]))
                for row in served]
        return Page(rows=rows, has_more=len(result.result_rows) > limit,
                    cursor=cursor.advanced(positions), positions=positions)


def _attempt_document(columns: tuple[str, ...] | list[str], values: tuple[Any, ...]
                      ) -> dict[str, Any]:
    document = dict(zip(columns, values, strict=True))
    for name in ("timestamp", "next_attempt_at"):
        if isinstance(document.get(name), datetime):
            document[name] = _iso(document[name])
    return document


def _iso(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
