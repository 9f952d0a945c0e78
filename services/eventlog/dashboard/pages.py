"""The dashboard's pages (GET): sign-in, endpoints with health, attempts (one with its
headers), events, DLQ, charts.

The endpoint forms (new, edit, delete) are in :mod:`endpoint_forms`, beside their posts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

from fastapi import Depends, Query, Request
from fastapi.responses import Response

from services.eventlog.dashboard.charts import deliveries_chart, latency_chart
from services.eventlog.dashboard.queries import BadPageToken, DashboardQueries, PageToken
from services.eventlog.dashboard.router import (
    ContextDep,
    SessionDep,
    dashboard_router,
    optional_session,
    redirect,
    render,
    sign_in_form,
)
from services.eventlog.dashboard.session import Session
from services.eventlog.dlq_api import list_dead_tasks
from services.eventlog.endpoints_api import list_endpoints
from services.eventlog.models import EndpointOut
from webhooks.endpoints import MASKED
from webhooks.matching import is_valid_filter
from webhooks.problems import Problem

PAGE_SIZE = 50
STATIC = Path(__file__).parent / "static"
STATIC_FILES = {"dashboard.css": "text/css", "dashboard.js": "text/javascript"}
# What a finished action says on the page it leads back to (by code, so a crafted link
# cannot put words on the page).
NOTICES = {
    "updated": "Endpoint saved.",
    "unchanged": "Nothing to save: the endpoint is as it was.",
    "deleted": "Endpoint deleted: nothing more is delivered to it.",
    "enabled": "Endpoint enabled.",
    "disabled": "Endpoint disabled: nothing is delivered to it until it is enabled.",
    "tested": "Test event queued; its attempt shows below within a few seconds.",
    "paused": "Endpoint paused: events are held, not sent, until it is resumed.",
    "resumed": "Endpoint resumed: everything held goes out now.",
    "verifying": "A new verification challenge is on its way; reload to see the answer.",
    "redelivered": "Redelivery queued ({n} task(s)).",
    "replayed": "Replay queued: {n} task(s).",
    "replay_skipped": "Replay queued: {n} task(s); {skipped} skipped (endpoint deleted or "
                      "disabled).",
    "signed_out": "Signed out.",
    "session_ended": "Your session ended (it timed out, its API key was revoked or expired, "
                     "or its tenant was erased): sign in again.",
}
OutcomeFilter = Literal["succeeded", "failed"]


def _notice(done: str | None, n: int | None, skipped: int | None) -> str | None:
    template = NOTICES.get(done or "")
    return template.format(n=n or 0, skipped=skipped or 0) if template else None


def _token(before: str | None) -> PageToken | None:
    try:
        return PageToken.decode(before) if before else None
    except BadPageToken as exc:
        raise Problem(400, str(exc), code="invalid_parameter") from exc


NoticeQuery = Annotated[str | None, Query(max_length=40)]
CountQuery = Annotated[int | None, Query(ge=0)]


@dashboard_router.get("")
async def home(session: Annotated[Session | None, Depends(optional_session)]) -> Response:
    """The endpoints page when signed in, else the sign-in page."""
    return redirect("/endpoints" if session else "/sign-in")


@dashboard_router.get("/static/{name}")
async def static(name: str) -> Response:
    """The dashboard's own CSS and JS (nothing comes from a CDN)."""
    if name not in STATIC_FILES:
        raise Problem(404, f"no static file {name}")
    return Response((STATIC / name).read_bytes(), media_type=STATIC_FILES[name],
                    headers={"Cache-Control": "public, max-age=300",
                             "X-Content-Type-Options": "nosniff"})


@dashboard_router.get("/sign-in")
async def sign_in_page(request: Request,
                       session: Annotated[Session | None, Depends(optional_session)],
                       done: NoticeQuery = None) -> Response:
    """The sign-in form; its double-submit token goes in a cookie and a hidden field."""
    return sign_in_form(request, signed_in=session is not None,
                        notice=_notice(done, None, None))


@dashboard_router.get("/endpoints")
def endpoints_page(ctx: ContextDep, session: SessionDep,
                   url: Annotated[str | None, Query(max_length=200)] = None,
                   state: Annotated[str | None, Query(max_length=20)] = None,
                   cursor: Annotated[str | None, Query(max_length=4096)] = None,
                   done: NoticeQuery = None, n: CountQuery = None) -> Response:
    """The tenant's endpoints with their health, a page at a time as ``GET /v1/endpoints``
    pages them (by id), failing ones first on each page; searched by URL text and state."""
    url = (url or "").strip() or None
    state = state if state in ("enabled", "disabled") else None
    shown = {"url": url, "state": state, "active": "endpoints"}
    try:
        page = list_endpoints(ctx, session.tenant, disabled=None if state is None
                              else state == "disabled", url=url, limit=PAGE_SIZE,
                              cursor=cursor)
    except Problem as exc:
        return render("endpoints.html", session, rows=[], page=None, error=exc.detail,
                      notice=None, status_code=exc.status, **shown)
    health = DashboardQueries(ctx.client).endpoint_health(session.tenant)

    def failing_first(endpoint: EndpointOut) -> tuple[int, float, str]:
        rate = health[endpoint.id].hour_rate if endpoint.id in health else None
        return (0 if endpoint.disabled else 1, 1.0 if rate is None else rate, endpoint.id)

    rows = [{"endpoint": e, "health": health.get(e.id)}
            for e in sorted(page.data, key=failing_first)]
    return render("endpoints.html", session, rows=rows, page=page, error=None,
                  notice=_notice(done, n, None), **shown)


@dashboard_router.get("/endpoints/{endpoint_id}")
def endpoint_page(ctx: ContextDep, session: SessionDep, endpoint_id: str,
                  status: Annotated[OutcomeFilter | None, Query()] = None,
                  before: Annotated[str | None, Query(max_length=200)] = None,
                  done: NoticeQuery = None, n: CountQuery = None) -> Response:
    """One endpoint: its settings, health and attempts (newest first), by outcome."""
    endpoint = ctx.endpoints.get(session.tenant, endpoint_id)
    if endpoint is None:
        return render("failure.html", session, status_code=404,
                      problem=Problem(404, f"no endpoint {endpoint_id}"))
    queries = DashboardQueries(ctx.client)
    attempts = queries.recent_attempts(session.tenant, endpoint_id, status, _token(before),
                                       PAGE_SIZE)
    health = queries.endpoint_health(session.tenant).get(endpoint_id)
    # As the API shows it: secret header values masked, warnings, the verification state.
    shown = EndpointOut.of(endpoint, ctx.settings.retention_days)
    return render("endpoint.html", session, endpoint=endpoint, health=health,
                  headers=shown.headers, warnings=shown.warnings,
                  verification=shown.verification,
                  payload_filter=json.dumps(shown.filter, indent=2, ensure_ascii=False)
                  if shown.filter is not None else None,
                  attempts=attempts, status=status, notice=_notice(done, n, None),
                  active="endpoints")


@dashboard_router.get("/endpoints/{endpoint_id}/attempts/{attempt_id}")
def attempt_page(ctx: ContextDep, session: SessionDep, endpoint_id: str,
                 attempt_id: str) -> Response:
    """One attempt in full: the request's headers as sent, the response's headers and body."""
    endpoint = ctx.endpoints.get(session.tenant, endpoint_id)
    attempt = (ctx.events.get_attempt(session.tenant, endpoint_id, attempt_id)
               if endpoint is not None else None)
    if endpoint is None or attempt is None:
        return render("failure.html", session, status_code=404,
                      problem=Problem(404, f"no attempt {attempt_id} of endpoint {endpoint_id}"))
    return render("attempt.html", session, endpoint=endpoint, attempt=attempt,
                  masked=MASKED, active="endpoints")


@dashboard_router.get("/events")
def events_page(ctx: ContextDep, session: SessionDep,
                q: Annotated[str | None, Query(max_length=128)] = None,
                before: Annotated[str | None, Query(max_length=200)] = None) -> Response:
    """Recent events (newest first); ``q`` is an event id (evt_…) or a type (order.*)."""
    query = (q or "").strip()
    if query.startswith("evt_"):
        if ctx.events.get_event(session.tenant, query) is not None:
            return redirect(f"/events/{query}")
        return render("events.html", session, page=None, q=query, active="events",
                      error=f"No event {query}.")
    if query and not is_valid_filter(query):
        return render("events.html", session, page=None, q=query, active="events",
                      error=f"{query!r} is neither an event id (evt_…) nor a type "
                            "(order.shipped, order.*).")
    page = DashboardQueries(ctx.client).recent_events(
        session.tenant, (query,) if query else (), _token(before), PAGE_SIZE)
    return render("events.html", session, page=page, q=query, active="events", error=None)


@dashboard_router.get("/events/{event_id}")
def event_page(ctx: ContextDep, session: SessionDep, event_id: str,
               done: NoticeQuery = None, n: CountQuery = None) -> Response:
    """One event: its envelope and, per endpoint, where its delivery stands."""
    raw = ctx.events.get_event(session.tenant, event_id)
    if raw is None:
        return render("failure.html", session, status_code=404,
                      problem=Problem(404, f"no event {event_id}"))
    envelope = json.loads(raw)
    deliveries = ctx.events.delivery_status(session.tenant, event_id)
    endpoints = {e.id: e for e in ctx.endpoints.list(session.tenant)}
    return render("event.html", session, envelope=envelope,
                  pretty=json.dumps(envelope, indent=2, ensure_ascii=False),
                  deliveries=deliveries, endpoints=endpoints, notice=_notice(done, n, None),
                  active="events")


@dashboard_router.get("/dlq")
def dlq_page(ctx: ContextDep, session: SessionDep,
             endpoint_id: Annotated[str | None, Query(max_length=80)] = None,
             type: Annotated[str | None, Query(max_length=128)] = None,
             cursor: Annotated[str | None, Query(max_length=4096)] = None,
             done: NoticeQuery = None, n: CountQuery = None,
             skipped: CountQuery = None) -> Response:
    """The dead-letter log (oldest first, as ``GET /v1/dlq`` pages it), with replay."""
    endpoint_id, type = endpoint_id or None, type or None
    try:
        answer = list_dead_tasks(ctx, session.tenant, endpoint_id=endpoint_id, type=type,
                                 created_after=None, created_before=None, limit=PAGE_SIZE,
                                 cursor=cursor)
    except Problem as exc:
        return render("dlq.html", session, page=None, error=exc.detail, endpoint_id=endpoint_id,
                      type=type, total=None, notice=None, active="dlq", status_code=exc.status)
    page = json.loads(bytes(answer.body))
    total = DashboardQueries(ctx.client).dead_task_count(session.tenant)
    return render("dlq.html", session, page=page, error=None, endpoint_id=endpoint_id,
                  type=type, total=total, notice=_notice(done, n, skipped), active="dlq")


@dashboard_router.get("/charts")
def charts_page(ctx: ContextDep, session: SessionDep) -> Response:
    """Attempts per minute (succeeded, failed) and latency percentiles, last hour."""
    series = DashboardQueries(ctx.client).minute_series(session.tenant)
    return render(
        "charts.html", session, active="charts",
        deliveries=deliveries_chart(series.minutes, series.succeeded, series.failed),
        latency=latency_chart(series.minutes, {"p50": series.p50, "p95": series.p95,
                                               "p99": series.p99},
                              [ok + bad > 0 for ok, bad in zip(series.succeeded, series.failed,
                                                               strict=True)]),
        total_succeeded=sum(series.succeeded), total_failed=sum(series.failed))

