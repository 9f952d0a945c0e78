"""Erasing a tenant: its rows leave ClickHouse, its compacted records are tombstoned.

The caller (``DELETE /v1/tenants/{id}``) has already written the tenant's ``deleted``
marker to the registry, so from then on every replica refuses the tenant's keys and
events, the fanout drops its tasks still in flight (outcome ``tenant_deleted``) and the
sink stops writing its rows. What this module does, in order:

1. tombstone the tenant's endpoints (endpoints topic) and their failure streaks
   (endpoint-health topic), so the fanout forgets them and compaction removes them;
2. wait until the sink has written everything on its topics up to now (rows read before
   the marker), then delete the tenant's rows from every table.

Records on the event, attempt, retry and DLQ topics (and the idempotency ledger) cannot
be removed one by one: they go when the topics' retention passes, and nothing reads
them for this tenant meanwhile.
"""

from __future__ import annotations

import logging
import time

from pydantic import BaseModel, Field

from services.eventlog.context import EventlogContext

log = logging.getLogger(__name__)

# How long erasure waits for the sink to write what it read before the marker.
SINK_FENCE_TIMEOUT = 30.0
# Tables with a tenant column, and what their rows are.
TENANT_TABLES = ("events", "attempts", "dlq")


class Erasure(BaseModel):
    """What erasing a tenant removed, and what only retention removes."""

    tenant: str
    rows_deleted: dict[str, int] = Field(description="ClickHouse rows removed, per table.")
    tombstoned: dict[str, int] = Field(description="Compacted-topic records tombstoned: "
                                       "endpoints, endpoint_health, keys.")
    remaining: list[str] = Field(description="What is left until retention removes it.")


def erase_tenant(ctx: EventlogContext, tenant: str, *, keys_revoked: int) -> Erasure:
    """Erase ``tenant``'s endpoints and rows (its registry marker is already written)."""
    endpoint_ids = _endpoint_ids(ctx, tenant)
    for endpoint_id in endpoint_ids:
        ctx.endpoints.delete(endpoint_id)
        ctx.producer.send(ctx.topics.endpoint_health, None, key=endpoint_id.encode())
    _wait_for_sink(ctx)
    deleted = {table: _delete_rows(ctx, table, "tenant = {tenant:String}", {"tenant": tenant})
               for table in TENANT_TABLES}
    deleted["endpoints"] = _delete_rows(ctx, "endpoints", "id IN {ids:Array(String)}",
                                        {"ids": endpoint_ids}) if endpoint_ids else 0
    settings = ctx.settings
    log.info("erased tenant %s: %s", tenant, deleted)
    return Erasure(
        tenant=tenant, rows_deleted=deleted,
        tombstoned={"endpoints": len(endpoint_ids), "endpoint_health": len(endpoint_ids),
                    "keys": keys_revoked},
        remaining=[
            f"records on the events, ingest, attempts, deliveries and retry topics until "
            f"their retention passes ({settings.retention_days} days)",
            f"dead-lettered tasks on the DLQ topic ({max(settings.retention_days, 30)} days)",
            "event ids and idempotency keys on the idempotency ledger topic (7 days)",
            "the tenant's deleted marker on the registry topic (its id only, kept so that "
            "every replica goes on refusing it)",
        ])


def _endpoint_ids(ctx: EventlogContext, tenant: str) -> list[str]:
    """Every endpoint id that ever belonged to the tenant (deleted ones too)."""
    result = ctx.client.query(
        "SELECT DISTINCT id FROM endpoints WHERE tenant = {tenant:String} ORDER BY id",
        parameters={"tenant": tenant})
    return [row[0] for row in result.result_rows]


def _wait_for_sink(ctx: EventlogContext) -> None:
    """Wait (bounded) until the sink has written every record on its topics up to now:
    rows it read before it knew of the erasure are then in the tables, to be deleted."""
    topics = ctx.topics
    deadline = time.monotonic() + SINK_FENCE_TIMEOUT
    targets = {topic: ctx.endpoints.topic_ends(topic)
               for topic in (topics.events, topics.attempts, topics.dlq, topics.endpoints)}
    for topic, ends in targets.items():
        wanted = {p: end for p, end in ends.items() if end > 0}
        while True:
            marks = ctx.events.watermarks(topic)
            if all(marks.get(p, 0) >= end for p, end in wanted.items()):
                break
            if time.monotonic() >= deadline:
                log.warning("erasure: the sink has not reached %s's end after %.0fs; rows "
                            "it writes later for the tenant are dropped by its filter",
                            topic, SINK_FENCE_TIMEOUT)
                return
            time.sleep(0.1)


def _delete_rows(ctx: EventlogContext, table: str, where: str,
                 parameters: dict[str, object]) -> int:
    """Delete the rows of ``table`` matching ``where``; how many there were."""
    count = ctx.client.query(f"SELECT count() FROM {table} WHERE {where}",
                             parameters=parameters).result_rows[0][0]
    if count:
        ctx.client.command(f"DELETE FROM {table} WHERE {where}", parameters=parameters)
    return int(count)
