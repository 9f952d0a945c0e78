"""Queries of the dead-letter log in ClickHouse: pages of dead tasks, one task, many by id.

The sink stores every task the fanout dead-lettered (the DLQ topic) in the ``dlq`` table
(migration 0003), ordered by tenant and Kafka position. Pages follow the same rules as
event pages (:mod:`services.eventlog.event_store`): only rows below the sink's
per-partition watermark, each partition in offset order from just after the cursor,
adjacent re-inserted duplicates dropped. The DLQ topic is keyed by endpoint id, so one
tenant's dead tasks usually span several partitions; the cursor keeps one offset each.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from clickhouse_connect.driver.client import Client

from services.eventlog.cursor import Cursor
from services.eventlog.event_store import (
    EventStore,
    Page,
    Query,
    distinct_page,
    moment_text,
    next_cursor,
    position_ranges,
    text_moment,
    time_conditions,
    type_condition,
)
from webhooks.delivery import DeliveryTask
from webhooks.envelope import format_timestamp
from webhooks.topics import Topics

DEAD_TASK_COLUMNS = "task, dead_lettered_at, attempts, reason, last_error, last_response_status"


@dataclass(frozen=True)
class DeadTaskFilters:
    """What a listing (or a replay) of dead tasks is restricted to; ``created_*`` bound the
    time the task was dead-lettered, ``types`` are OR-ed event type filters."""

    endpoint_id: str | None = None
    types: tuple[str, ...] = ()
    created_after: datetime | None = None
    created_before: datetime | None = None

    def describe(self) -> dict[str, Any]:
        """The filters as a plain dict: what a cursor carries and is bound to."""
        return {"endpoint_id": self.endpoint_id, "types": list(self.types),
                "created_after": moment_text(self.created_after),
                "created_before": moment_text(self.created_before)}

    @classmethod
    def from_description(cls, described: dict[str, Any]) -> DeadTaskFilters:
        """The filters :meth:`describe` gave (as a cursor carries them back)."""
        return cls(endpoint_id=described.get("endpoint_id"),
                   types=tuple(described.get("types") or ()),
                   created_after=text_moment(described.get("created_after")),
                   created_before=text_moment(described.get("created_before")))

    @property
    def empty(self) -> bool:
        """No filter at all: the whole dead-letter log of the tenant."""
        return self == DeadTaskFilters()


def dead_task_document(values: Sequence[Any]) -> dict[str, Any]:
    """The API's view of one dead task from a row of :data:`DEAD_TASK_COLUMNS`."""
    raw, dead_lettered_at, attempts, reason, last_error, last_response_status = values
    task = json.loads(raw)
    event = task["event"]
    return {"id": task["task_id"], "endpoint_id": task["endpoint_id"],
            "event_id": event["id"], "event_type": event["type"], "event": event,
            "trigger": task.get("trigger", "event"), "attempts": int(attempts),
            "history": task.get("history", []), "reason": reason,
            "last_error": last_error, "last_response_status": last_response_status,
            "dead_lettered_at": format_timestamp(dead_lettered_at)}


class DlqStore:
    """Read side of the dead-letter log, scoped by tenant on every query."""

    def __init__(self, client: Client, topics: Topics) -> None:
        self.client = client
        self.topics = topics
        self._positions = EventStore(client, topics)

    def watermarks(self) -> dict[int, int]:
        """Per DLQ partition, the next offset the sink will write (rows below show)."""
        return self._positions.watermarks(self.topics.dlq)

    def dead_tasks_query(self, tenant: str, filters: DeadTaskFilters, cursor: Cursor,
                         rows: int, watermarks: dict[int, int] | None = None) -> Query:
        """The SQL and parameters of the first ``rows`` raw rows after ``cursor``."""
        if watermarks is None:
            watermarks = self.watermarks()
        params: dict[str, Any] = {"tenant": tenant}
        conditions = ["tenant = {tenant:String}", position_ranges(cursor, watermarks),
                      type_condition(filters.types, params, column="event_type"),
                      *time_conditions("dead_lettered_at", filters.created_after,
                                       filters.created_before, params)]
        if filters.endpoint_id is not None:
            params["endpoint"] = filters.endpoint_id
            conditions.append("endpoint_id = {endpoint:String}")
        sql = (f"SELECT kafka_partition, kafka_offset, {DEAD_TASK_COLUMNS} FROM dlq "
               f"WHERE {' AND '.join(conditions)} "
               f"ORDER BY kafka_partition, kafka_offset LIMIT {int(rows)}")
        return sql, params

    def _page_rows(self, tenant: str, filters: DeadTaskFilters, cursor: Cursor, limit: int
                   ) -> tuple[list[Sequence[Any]], bool, Cursor]:
        watermarks = self.watermarks()
        served, has_more = distinct_page(
            self.client,
            lambda n: self.dead_tasks_query(tenant, filters, cursor, n, watermarks), limit)
        positions = [(int(row[0]), int(row[1])) for row in served]
        return served, has_more, next_cursor(cursor, positions, has_more, watermarks)

    def page(self, tenant: str, filters: DeadTaskFilters, cursor: Cursor, limit: int
             ) -> Page:
        """Up to ``limit`` dead tasks (JSON documents) after ``cursor``, oldest first."""
        served, has_more, resume_at = self._page_rows(tenant, filters, cursor, limit)
        return Page(rows=[json.dumps(dead_task_document(row[2:])) for row in served],
                    has_more=has_more, cursor=resume_at)

    def iter_tasks(self, tenant: str, filters: DeadTaskFilters, chunk: int = 1000
                   ) -> Iterator[DeliveryTask]:
        """Every visible matching dead task, in position order, page by page."""
        cursor = Cursor()
        while True:
            served, has_more, cursor = self._page_rows(tenant, filters, cursor, chunk)
            for row in served:
                yield DeliveryTask.from_json(row[2])
            if not has_more:
                return

    @staticmethod
    def dead_task_query(tenant: str, task_ids: Sequence[str]) -> Query:
        """The SQL and parameters of dead tasks by id: the tenant by sorting key, the ids
        by the ``task_id`` bloom filter index; each id once (its first dead-lettering)."""
        return (f"SELECT task_id, {DEAD_TASK_COLUMNS} FROM dlq "
                "WHERE tenant = {tenant:String} AND task_id IN {ids:Array(String)} "
                "ORDER BY kafka_partition, kafka_offset LIMIT 1 BY task_id",
                {"tenant": tenant, "ids": list(task_ids)})

    def get(self, tenant: str, task_id: str) -> dict[str, Any] | None:
        """One of ``tenant``'s dead tasks as the API shows it, or None."""
        sql, params = self.dead_task_query(tenant, [task_id])
        rows = self.client.query(sql, parameters=params).result_rows
        return dead_task_document(rows[0][1:]) if rows else None

    def tasks_by_id(self, tenant: str, task_ids: Sequence[str]) -> dict[str, DeliveryTask]:
        """Those of ``task_ids`` that are ``tenant``'s dead tasks, by id."""
        sql, params = self.dead_task_query(tenant, task_ids)
        rows = self.client.query(sql, parameters=params).result_rows
        return {row[0]: DeliveryTask.from_json(row[1]) for row in rows}
