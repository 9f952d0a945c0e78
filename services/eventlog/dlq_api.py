"""``/v1/dlq``: the dead-letter log of the caller's tenant, and replaying what died.

A dead task is one the fanout gave up on: its retries ran out, or its endpoint was
disabled meanwhile. A replay queues a fresh delivery task (new task id, attempt 1,
trigger ``replay``) for the same event, so the receiver sees the same ``webhook-id``,
and the same endpoint; the dead task stays in the log.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Body, Path, Query, Response

from services.eventlog.context import PROBLEM_RESPONSES, EventlogContext, page_response
from services.eventlog.deps import ContextDep, ManageTenantDep, ReadTenantDep
from services.eventlog.dlq_store import DeadTaskFilters, DlqStore
from services.eventlog.listing import CursorQuery, LimitQuery, checked_range, checked_types
from services.eventlog.models import (
    ENDPOINT_ID_PATTERN,
    MAX_LISTED_TASKS,
    DeadTask,
    DeadTaskPage,
    DlqReplayRequest,
    QueuedTask,
    Replayed,
    SkippedEndpoint,
)
from webhooks.delivery import DeliveryTask
from webhooks.endpoints import Endpoint
from webhooks.envelope import Envelope
from webhooks.problems import Problem

TASK_ID = Path(description="Dead task id (dlv_…).", max_length=80)

# Routes over the dead-letter log of the caller's tenant.
dlq_router = APIRouter(prefix="/v1/dlq", tags=["dlq"], responses=PROBLEM_RESPONSES)


def _store(ctx: EventlogContext) -> DlqStore:
    return DlqStore(ctx.client, ctx.topics)


def _filters(endpoint_id: str | None, type: str | None, created_after: datetime | None,
             created_before: datetime | None, *, in_body: bool = False) -> DeadTaskFilters:
    """The filters, or a problem naming the bad one: 400 for a query parameter, 422 for a
    field of the JSON body (as everywhere in the API)."""
    after, before = checked_range(created_after, created_before, in_body=in_body)
    return DeadTaskFilters(endpoint_id=endpoint_id, types=checked_types(type, in_body=in_body),
                           created_after=after, created_before=before)


@dlq_router.get("", response_model=DeadTaskPage, summary="Page through the dead-letter log")
def list_dead_tasks(
    ctx: ContextDep,
    tenant: ReadTenantDep,
    endpoint_id: Annotated[str | None, Query(
        description="Only tasks for this endpoint (ep_…).", pattern=ENDPOINT_ID_PATTERN)
    ] = None,
    type: Annotated[str | None, Query(
        description="Event type, exact (order.shipped) or prefix wildcard (order.*).",
        max_length=128)] = None,
    created_after: Annotated[datetime | None, Query(
        description="Only tasks dead-lettered strictly after this instant (UTC if no zone); "
                    "the time the task went to the DLQ, not the event's creation.")] = None,
    created_before: Annotated[datetime | None, Query(
        description="Only tasks dead-lettered strictly before this instant.")] = None,
    limit: LimitQuery = 100,
    cursor: CursorQuery = None,
) -> Response:
    """Dead tasks of the tenant in DLQ order (newest last), each with its event, attempt
    history and why delivery stopped; gap-free paging like ``/v1/events``, where
    ``created_after``/``created_before`` bound the time a task was dead-lettered."""
    filters = _filters(endpoint_id, type, created_after, created_before)
    position, binding = ctx.decode_cursor(cursor, "dlq", tenant, filters.describe(),
                                          filters_given=not filters.empty)
    if position.filters is not None:
        filters = DeadTaskFilters.from_description(position.filters)
    page = _store(ctx).page(tenant, filters, position, limit)
    return page_response(page, binding, ctx.cursor_key)


@dlq_router.get("/{task_id}", response_model=DeadTask, summary="One dead task")
def get_dead_task(ctx: ContextDep, tenant: ReadTenantDep,
                  task_id: Annotated[str, TASK_ID]) -> DeadTask:
    """The dead task with its event, every attempt and why delivery stopped."""
    document = _store(ctx).get(tenant, task_id)
    if document is None:
        raise Problem(404, f"no dead task {task_id}")
    return DeadTask.model_validate(document)


@dlq_router.post("/replay", status_code=202, response_model=Replayed,
                 summary="Deliver dead tasks again")
def replay(ctx: ContextDep, tenant: ManageTenantDep,
           request: Annotated[DlqReplayRequest, Body()]) -> Replayed:
    """Queue the dead tasks named by ``ids``, or every one matching the filters
    (``{"endpoint_id": "ep_…"}``: all of one endpoint's), again: a new task for the same
    event and endpoint, trigger ``replay``, so the receiver sees the same ``webhook-id``.

    Answers once Kafka acknowledged every new task. Tasks whose endpoint was deleted or
    is disabled are skipped and counted in ``skipped``; unknown ids answer 404 and
    queue nothing.
    """
    store = _store(ctx)
    filters = _filters(request.endpoint_id, request.type, request.created_after,
                       request.created_before, in_body=True)
    if request.ids is not None and not filters.empty:
        raise Problem(400, "ids: name either ids or filters, not both",
                      code="invalid_parameter")
    if request.ids is None and filters.empty:
        raise Problem(400, "name the dead tasks to replay: ids, or at least one of "
                           "endpoint_id, type, created_after, created_before",
                      code="invalid_parameter")
    tasks: Iterable[DeliveryTask]
    if request.ids is not None:
        found = store.tasks_by_id(tenant, request.ids)
        missing = [task_id for task_id in dict.fromkeys(request.ids) if task_id not in found]
        if missing:
            shown = ", ".join(missing[:10]) + (", …" if len(missing) > 10 else "")
            raise Problem(404, f"no dead tasks {shown}; nothing was replayed")
        tasks = [found[task_id] for task_id in dict.fromkeys(request.ids)]
    else:
        tasks = store.iter_tasks(tenant, filters)
    endpoints = {endpoint.id: endpoint for endpoint in ctx.endpoints.list(tenant)}
    skipped: Counter[tuple[str, Literal["deleted", "disabled"]]] = Counter()

    def replayable() -> Iterator[tuple[Envelope, Endpoint]]:
        for task in tasks:
            endpoint = endpoints.get(task.endpoint_id)
            if endpoint is None or endpoint.disabled:
                skipped[(task.endpoint_id, "deleted" if endpoint is None else "disabled")] += 1
                continue
            yield task.event, endpoint

    queued = ctx.queue.enqueue(replayable(), "replay", keep=MAX_LISTED_TASKS)
    return Replayed(
        queued=queued.count,
        tasks=[QueuedTask(task_id=t.task_id, endpoint_id=t.endpoint_id, event_id=t.event.id)
               for t in queued.first],
        skipped=sum(skipped.values()),
        skipped_endpoints=[SkippedEndpoint(endpoint_id=endpoint_id, reason=reason)
                           for endpoint_id, reason in sorted(skipped)])
