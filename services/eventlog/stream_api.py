"""``GET /v1/events/stream``: the event log as Server-Sent Events, live and resumable.

The stream is the same gap-free log as ``GET /v1/events``, read forward: the route polls
the event store every :data:`POLL_SECONDS` for rows after its cursor and sends each as one
SSE message whose ``id`` is the cursor *after* that event. A client that reconnects with
``Last-Event-ID`` (what browsers' ``EventSource`` do by themselves) or ``?cursor=``
continues exactly after the last event it received: no gap, no repeat.

Where a stream starts:

- with ``Last-Event-ID`` (wins) or ``cursor``: just after that position, with the filters
  the cursor carries (other filters with it: 400). The cursor is an events-listing
  cursor, so a ``next_cursor`` of ``GET /v1/events`` also works: page the backlog, then
  follow live (the stream's ``since`` is the listing's ``created_after``);
- with ``since`` only: every event created after ``since``, from the start of the log,
  then live (``since`` is the listing's ``created_after`` filter, kept for the session);
- with neither: "now", only events that become visible after the stream opened.

The first message (no data, so no event fires) carries the start position as its
``id``: a client that reconnects before any event arrived still continues from there.
Between events a comment line (``: heartbeat``) goes out every ``heartbeat`` seconds,
so proxies keep the connection and clients notice a dead one. A heartbeat also carries
an ``id`` (no data: no event fires, but the client's last event id moves) when a
filtered stream has skipped past rows of other types, so a reconnect does not rescan them.

The store is blocking (clickhouse-connect), so every read runs in a worker thread and
the event loop stays free. A client that disconnects ends the generator at its next
send or poll.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

import anyio
from clickhouse_connect.driver.exceptions import ClickHouseError
from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse
from prometheus_client import Gauge

from services.eventlog.context import PROBLEM_RESPONSES, EventlogContext
from services.eventlog.cursor import Cursor
from services.eventlog.deps import ContextDep, PrincipalDep, ReadTenantDep
from services.eventlog.event_store import EventFilters, EventStore
from services.eventlog.listing import checked_types
from webhooks.auth import ApiKeys
from webhooks.envelope import to_utc

log = logging.getLogger(__name__)

POLL_SECONDS = 0.25  # how often the store is asked for new rows while the stream is idle
HEARTBEAT_SECONDS = 15.0  # default gap between heartbeat comments
BATCH_ROWS = 500  # rows read per poll; a backlog is sent in batches of this size
STORE_RETRY_SECONDS = 1.0  # wait after a failed read of the store
RETRY_MILLISECONDS = 2000  # the reconnection delay an EventSource should use

STREAMS_OPEN = Gauge("eventlog_event_streams_open", "Event streams (SSE) being served now")

stream_router = APIRouter(prefix="/v1/events", tags=["events"], responses=PROBLEM_RESPONSES)


@dataclass
class StreamBatch:
    """Events read in one poll, each with the cursor just after it, and where to go on."""

    events: list[tuple[str, Cursor]]
    end: Cursor
    more: bool  # the read was full: more rows may be visible already


def read_batch(store: EventStore, tenant: str, filters: EventFilters, cursor: Cursor,
               limit: int = BATCH_ROWS) -> StreamBatch:
    """Up to ``limit`` visible envelopes (raw JSON) after ``cursor`` in log order.

    Same rules as the events listing: only rows below the sink's watermarks, each
    partition from just after the cursor, adjacent copies of one Kafka record (a batch
    the sink inserted twice) served once. When the read reached the end of what is
    visible, ``end`` moves past the watermarks, so non-matching rows are not read again.
    """
    watermarks = store.watermarks(store.topics.events)
    sql, params = store.events_query(tenant, filters, cursor, limit, watermarks)
    rows = store.client.query(sql, parameters=params).result_rows
    events: list[tuple[str, Cursor]] = []
    position = cursor
    previous: tuple[int, int] | None = None
    for partition, offset, envelope in rows:
        key = (int(partition), int(offset))
        if key == previous:
            continue
        previous = key
        position = position.advanced([key])
        events.append((envelope, position))
    if len(rows) < limit:
        position = position.advanced([(p, next_offset - 1) for p, next_offset
                                      in watermarks.items() if next_offset > 0])
    return StreamBatch(events, position, more=len(rows) >= limit)


def current_position(store: EventStore, start: Cursor) -> Cursor:
    """``start`` moved to "now": just before the next row the sink will make visible."""
    watermarks = store.watermarks(store.topics.events)
    return start.advanced([(p, next_offset - 1) for p, next_offset in watermarks.items()
                              if next_offset > 0])


def sse_message(data: str, event_id: str) -> str:
    """One SSE message; a (pretty-printed) document spanning lines gets one ``data:`` each."""
    lines = "".join(f"data: {line}\n" for line in data.splitlines() or [""])
    return f"id: {event_id}\n{lines}\n"


@stream_router.get(
    "/stream", summary="Follow the event log live (Server-Sent Events)",
    response_class=StreamingResponse,
    # Marks the answer as never ending (API fuzzers and generated clients must not wait
    # for its end).
    openapi_extra={"x-endless": True},
    responses={200: {"description": "An endless text/event-stream: one message per event "
                                    "(data = the envelope, id = the cursor after it) and "
                                    "heartbeat comments.",
                     "content": {"text/event-stream": {}}}})
async def stream_events(
    request: Request,
    ctx: ContextDep,
    tenant: ReadTenantDep,
    caller: PrincipalDep,
    type: Annotated[str | None, Query(
        description="Exact type (order.shipped) or prefix wildcard (order.*).",
        max_length=128)] = None,
    since: Annotated[datetime | None, Query(
        description="Start with the events created after this instant (from the start of "
                    "the log), then follow; without it and without a cursor the stream "
                    "starts now.")] = None,
    cursor: Annotated[str | None, Query(
        description="Resume just after this position: an SSE id of this stream or a "
                    "next_cursor of GET /v1/events with the same filters.",
        max_length=4096)] = None,
    heartbeat: Annotated[float, Query(
        ge=0.05, le=300, description="Seconds between heartbeat comments.")
    ] = HEARTBEAT_SECONDS,
    last_event_id: Annotated[str | None, Header(
        description="Set by reconnecting EventSource clients; wins over cursor.",
        max_length=4096)] = None,
) -> StreamingResponse:
    """Every new event of the tenant, as it becomes visible, in log order; the stream
    ends when its key is revoked or expires, or the tenant is erased."""
    filters = EventFilters(types=checked_types(type), created_after=since and to_utc(since))
    token = last_event_id or cursor
    # Validated here, before the response starts: a bad cursor is a 400 problem. A cursor
    # alone continues with the filters it carries; with filters, they must be its own.
    position, binding = ctx.decode_cursor(token, "events", tenant, filters.describe(),
                                          filters_given=filters != EventFilters())
    if position.filters is not None:
        filters = EventFilters.from_description(position.filters)
    if not token and since is None:
        position = await anyio.to_thread.run_sync(current_position, ctx.events, position)
    api_keys: ApiKeys = request.app.state.api_keys

    def allowed() -> bool:
        return api_keys.still_valid(caller) and not ctx.registry.is_deleted(tenant)

    return StreamingResponse(
        _event_stream(request, ctx, tenant, filters, position, binding, heartbeat, allowed),
        media_type="text/event-stream",
        # no-transform/X-Accel-Buffering: proxies must pass messages on as they come.
        headers={"Cache-Control": "no-cache, no-transform", "X-Accel-Buffering": "no"})


async def _event_stream(request: Request, ctx: EventlogContext, tenant: str,
                        filters: EventFilters, position: Cursor, binding: str,
                        heartbeat: float, allowed: Callable[[], bool]) -> AsyncIterator[str]:
    sent_position = position
    last_sent = time.monotonic()
    STREAMS_OPEN.inc()
    try:
        # The start position as the first id: a client that reconnects before any event
        # came resumes from here, not from a new "now" (which would skip what arrived).
        yield (f"retry: {RETRY_MILLISECONDS}\nid: {position.encode(binding, ctx.cursor_key)}\n"
               ": stream open\n\n")
        while allowed() and not await request.is_disconnected():
            try:
                batch = await anyio.to_thread.run_sync(
                    read_batch, ctx.events, tenant, filters, position)
            except ClickHouseError as exc:
                # The store is down for a moment: keep the stream (and its position), retry.
                log.warning("event stream of tenant %s: ClickHouse failed: %s", tenant, exc)
                await anyio.sleep(STORE_RETRY_SECONDS)
                continue
            for envelope, after in batch.events:
                yield sse_message(envelope, after.encode(binding, ctx.cursor_key))
            if batch.events:
                sent_position = batch.events[-1][1]
                last_sent = time.monotonic()
            position = batch.end
            if batch.more:
                continue  # a backlog: read on without waiting
            if time.monotonic() - last_sent >= heartbeat:
                moved = position != sent_position
                yield ": heartbeat\n" + (
                    f"id: {position.encode(binding, ctx.cursor_key)}\n" if moved else "") + "\n"
                sent_position = position
                last_sent = time.monotonic()
            await anyio.sleep(POLL_SECONDS)
    finally:
        STREAMS_OPEN.dec()
        log.debug("event stream of tenant %s closed", tenant)
