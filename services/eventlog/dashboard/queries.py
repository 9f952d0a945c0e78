"""What the dashboard reads that the JSON API has no listing for: endpoint health, the
newest attempts and events first, and per-minute delivery series.

The API pages in log order (oldest first, gap-free for clients that catch up); a person
looking at a dashboard wants the newest first and can live without gap-free resumption,
so these queries page backwards by ``(time, id)`` instead. Everything else the dashboard
shows (one event and its deliveries, the DLQ, every change) goes through the same stores
and route functions as the API. Every query is scoped by tenant.

Rows the sink inserted twice (a replayed batch before merges) are dropped with
``LIMIT 1 BY id`` in listings; counts may include such a duplicate for a moment, which is
harmless in a success rate.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from clickhouse_connect.driver.client import Client

from services.eventlog.event_store import (
    ATTEMPT_SUMMARY_FIELDS,
    clickhouse_time,
    type_condition,
)
from webhooks.envelope import format_timestamp, to_utc, utcnow


class BadPageToken(ValueError):
    """A ``before`` token that this module did not issue."""


@dataclass(frozen=True)
class PageToken:
    """Where a newest-first page continues: strictly before ``(moment, row_id)``."""

    moment: datetime
    row_id: str

    def encode(self) -> str:
        return f"{format_timestamp(self.moment)}~{self.row_id}"

    @classmethod
    def decode(cls, text: str) -> PageToken:
        moment_text, sep, row_id = text.partition("~")
        if not sep or not row_id or len(text) > 200:
            raise BadPageToken("before: not a page token of this listing")
        try:
            moment = to_utc(datetime.fromisoformat(moment_text.replace("Z", "+00:00")))
        except ValueError as exc:
            raise BadPageToken("before: not a page token of this listing") from exc
        return cls(moment, row_id)


@dataclass
class RecentPage:
    """Rows newest first, and the token of the next (older) page if there is one."""

    rows: list[dict[str, Any]]
    older: str | None


@dataclass
class EndpointHealth:
    """Success rates and the last failure of one endpoint (from its attempts)."""

    hour_attempts: int = 0
    hour_succeeded: int = 0
    day_attempts: int = 0
    day_succeeded: int = 0
    last_failure_at: datetime | None = None
    last_error: str | None = None
    last_response_status: int | None = None
    last_response_body: str | None = None

    @staticmethod
    def _rate(succeeded: int, attempts: int) -> float | None:
        return succeeded / attempts if attempts else None

    @property
    def hour_rate(self) -> float | None:
        """Share of the last hour's attempts that succeeded; None without attempts."""
        return self._rate(self.hour_succeeded, self.hour_attempts)

    @property
    def day_rate(self) -> float | None:
        """Share of the last day's attempts that succeeded; None without attempts."""
        return self._rate(self.day_succeeded, self.day_attempts)


@dataclass
class MinuteSeries:
    """Per minute (oldest first): attempts succeeded and failed, latency percentiles (ms)."""

    minutes: list[datetime] = field(default_factory=list)
    succeeded: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    p50: list[float] = field(default_factory=list)
    p95: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)


def _time_param(moment: datetime) -> str:
    return clickhouse_time(moment)


def _before_condition(column: str, token: PageToken | None, params: dict[str, Any]) -> str:
    """Rows strictly before ``token`` in ``(column, id)`` order; a plain bound on the time
    column too, which the engine can use to skip parts."""
    if token is None:
        return "1"
    params["before_at"] = _time_param(token.moment)
    params["before_id"] = token.row_id
    return (f"{column} <= {{before_at:DateTime64(6, 'UTC')}} AND "
            f"({column}, id) < ({{before_at:DateTime64(6, 'UTC')}}, {{before_id:String}})")


class DashboardQueries:
    """Read-only ClickHouse queries of the dashboard."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def endpoint_health(self, tenant: str, now: datetime | None = None
                        ) -> dict[str, EndpointHealth]:
        """Per endpoint id of ``tenant`` with attempts in the last day: its health."""
        now = now or utcnow()
        params = {"tenant": tenant, "day": _time_param(now - timedelta(days=1)),
                  "hour": _time_param(now - timedelta(hours=1))}
        result = self.client.query(
            "SELECT endpoint_id, "
            "countIf(timestamp > {hour:DateTime64(6, 'UTC')}), "
            "countIf(timestamp > {hour:DateTime64(6, 'UTC')} AND status = 'succeeded'), "
            "count(), countIf(status = 'succeeded'), "
            "maxIf(timestamp, status = 'failed'), "
            "argMaxIf(error, timestamp, status = 'failed'), "
            "argMaxIf(response_status, timestamp, status = 'failed'), "
            "argMaxIf(response_body, timestamp, status = 'failed'), "
            "countIf(status = 'failed') "
            "FROM attempts WHERE tenant = {tenant:String} "
            "AND timestamp > {day:DateTime64(6, 'UTC')} GROUP BY endpoint_id",
            parameters=params)
        health = {}
        for row in result.result_rows:
            endpoint_id, hour_n, hour_ok, day_n, day_ok, failed_at, error, status, body, fails = row
            failed = bool(fails)
            health[endpoint_id] = EndpointHealth(
                hour_attempts=int(hour_n), hour_succeeded=int(hour_ok),
                day_attempts=int(day_n), day_succeeded=int(day_ok),
                last_failure_at=to_utc(failed_at) if failed else None,
                last_error=error if failed else None,
                last_response_status=status if failed else None,
                last_response_body=body if failed else None)
        return health

    def recent_attempts(self, tenant: str, endpoint_id: str, status: str | None,
                        before: PageToken | None, limit: int) -> RecentPage:
        """One endpoint's attempts, newest first, optionally only ``status`` ones."""
        params: dict[str, Any] = {"tenant": tenant, "endpoint": endpoint_id}
        conditions = ["tenant = {tenant:String}", "endpoint_id = {endpoint:String}",
                      _before_condition("timestamp", before, params)]
        if status is not None:
            params["status"] = status
            conditions.append("status = {status:String}")
        result = self.client.query(
            f"SELECT {', '.join(ATTEMPT_SUMMARY_FIELDS)} FROM attempts "
            f"WHERE {' AND '.join(conditions)} "
            f"ORDER BY timestamp DESC, id DESC LIMIT 1 BY id LIMIT {int(limit) + 1}",
            parameters=params)
        rows = [dict(zip(ATTEMPT_SUMMARY_FIELDS, row, strict=True))
                for row in result.result_rows]
        return self._page(rows, limit, "timestamp")

    def recent_events(self, tenant: str, types: tuple[str, ...], before: PageToken | None,
                      limit: int) -> RecentPage:
        """The tenant's events, newest ``created`` first, optionally of ``types``."""
        params: dict[str, Any] = {"tenant": tenant}
        conditions = ["tenant = {tenant:String}", type_condition(types, params),
                      _before_condition("created", before, params)]
        result = self.client.query(
            "SELECT id, created, envelope FROM events "
            f"WHERE {' AND '.join(conditions)} "
            f"ORDER BY created DESC, id DESC LIMIT 1 BY id LIMIT {int(limit) + 1}",
            parameters=params)
        rows = [{"id": row[0], "created": row[1], **_event_summary(row[2])}
                for row in result.result_rows]
        return self._page(rows, limit, "created")

    @staticmethod
    def _page(rows: list[dict[str, Any]], limit: int, time_column: str) -> RecentPage:
        older = None
        if len(rows) > limit:
            rows = rows[:limit]
            last = rows[-1]
            older = PageToken(to_utc(last[time_column]), last["id"]).encode()
        return RecentPage(rows=rows, older=older)

    def dead_task_count(self, tenant: str) -> int:
        """How many tasks of ``tenant`` are in the dead-letter log (within retention)."""
        result = self.client.query(
            "SELECT uniqExact(task_id) FROM dlq WHERE tenant = {tenant:String}",
            parameters={"tenant": tenant})
        return int(result.result_rows[0][0])

    def minute_series(self, tenant: str, minutes: int = 60, now: datetime | None = None
                      ) -> MinuteSeries:
        """Attempts per minute (succeeded / failed) and latency percentiles, last ``minutes``;
        minutes without attempts are filled with zeros so the time axis is even."""
        now = (now or utcnow()).replace(second=0, microsecond=0)
        start = now - timedelta(minutes=minutes - 1)
        result = self.client.query(
            "SELECT toStartOfMinute(timestamp) AS minute, countIf(status = 'succeeded'), "
            "countIf(status = 'failed'), quantiles(0.5, 0.95, 0.99)(latency_ms) "
            "FROM attempts WHERE tenant = {tenant:String} "
            "AND timestamp >= {start:DateTime64(6, 'UTC')} GROUP BY minute ORDER BY minute",
            parameters={"tenant": tenant, "start": _time_param(start)})
        by_minute = {to_utc(row[0]).replace(second=0, microsecond=0): row
                     for row in result.result_rows}
        series = MinuteSeries()
        for index in range(minutes):
            minute = start + timedelta(minutes=index)
            row = by_minute.get(minute)
            series.minutes.append(minute)
            series.succeeded.append(int(row[1]) if row else 0)
            series.failed.append(int(row[2]) if row else 0)
            p50, p95, p99 = (row[3] if row else (0.0, 0.0, 0.0))
            series.p50.append(float(p50))
            series.p95.append(float(p95))
            series.p99.append(float(p99))
        return series


def _event_summary(raw: str) -> dict[str, Any]:
    """The type and a short preview of an event's data, for a listing row."""
    envelope = json.loads(raw)
    preview = json.dumps(envelope.get("data", {}), separators=(",", ":"))
    return {"type": envelope.get("type"),
            "preview": preview if len(preview) <= 120 else preview[:119] + "…"}
