"""``/v1/events``: event log replay, one event with its delivery status, redelivery."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query, Response

from services.eventlog.context import PROBLEM_RESPONSES, page_response
from services.eventlog.deps import ContextDep, ManageTenantDep, ReadTenantDep
from services.eventlog.event_store import EventFilters
from services.eventlog.listing import CursorQuery, LimitQuery, checked_range, checked_types
from services.eventlog.models import (
    MAX_LISTED_TASKS,
    EventDetail,
    EventPage,
    Queued,
    RedeliverRequest,
)
from webhooks.envelope import Envelope, format_timestamp
from webhooks.problems import Problem

EVENT_ID = Path(description="Event id (evt_…).", max_length=80)


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return format_timestamp(value)
    return value


# Routes over the event log of the caller's tenant.
events_router = APIRouter(prefix="/v1/events", tags=["events"], responses=PROBLEM_RESPONSES)


@events_router.get("", response_model=EventPage, summary="Page through the event log")
def list_events(
    ctx: ContextDep,
    tenant: ReadTenantDep,
    type: Annotated[str | None, Query(
        description="Exact type (order.shipped) or prefix wildcard (order.*).",
        max_length=128)] = None,
    created_after: Annotated[datetime | None, Query(
        description="Only events created strictly after this instant (UTC if no zone).")
    ] = None,
    created_before: Annotated[datetime | None, Query(
        description="Only events created strictly before this instant.")] = None,
    limit: LimitQuery = 100,
    cursor: CursorQuery = None,
) -> Response:
    """Events of the tenant in log order (newest last), gap-free and duplicate-free.

    Page until ``has_more`` is false; later, resume with the last ``next_cursor`` to
    get exactly the events that arrived since. The cursor alone continues the listing
    with its filters; other filters with it answer 400.
    """
    after, before = checked_range(created_after, created_before)
    filters = EventFilters(types=checked_types(type), created_after=after, created_before=before)
    position, binding = ctx.decode_cursor(cursor, "events", tenant, filters.describe(),
                                          filters_given=filters != EventFilters())
    if position.filters is not None:
        filters = EventFilters.from_description(position.filters)
    page = ctx.events.page_events(tenant, filters, position, limit)
    return page_response(page, binding, ctx.cursor_key)


@events_router.get("/{event_id}", response_model=EventDetail, summary="One event")
def get_event(ctx: ContextDep, tenant: ReadTenantDep,
              event_id: Annotated[str, EVENT_ID]) -> EventDetail:
    """The envelope and, per endpoint it went to, where its delivery stands."""
    raw = ctx.events.get_event(tenant, event_id)
    if raw is None:
        raise Problem(404, f"no event {event_id}")
    deliveries = [{k: _json_value(v) for k, v in row.items()}
                  for row in ctx.events.delivery_status(tenant, event_id)]
    return EventDetail.model_validate({**json.loads(raw), "deliveries": deliveries})


@events_router.post("/{event_id}/redeliver", status_code=202, response_model=Queued,
                    summary="Deliver an event again")
def redeliver(
    ctx: ContextDep,
    tenant: ManageTenantDep,
    event_id: Annotated[str, EVENT_ID],
    request: Annotated[RedeliverRequest | None, Body()] = None,
) -> Queued:
    """Queue the event again (same id, so the same ``webhook-id``) for every endpoint
    it matches now, or for ``endpoint_id`` only."""
    raw = ctx.events.get_event(tenant, event_id)
    if raw is None:
        raise Problem(404, f"no event {event_id}")
    event = Envelope.from_json(raw)
    if request is not None and request.endpoint_id is not None:
        endpoint = ctx.endpoints.get(tenant, request.endpoint_id)
        if endpoint is None:
            raise Problem(404, f"no endpoint {request.endpoint_id}")
        if not endpoint.wants(event):
            raise Problem(409, f"endpoint {endpoint.id} is disabled, not verified or not "
                               f"subscribed to {event.type}")
        targets = [endpoint]
    else:
        targets = [e for e in ctx.endpoints.list(tenant) if e.wants(event)]
    return Queued.of(ctx.queue.enqueue(((event, endpoint) for endpoint in targets),
                                       "redeliver", keep=MAX_LISTED_TASKS))
