"""The dashboard's actions (POST): sign-in and -out, and every change, each through the
same route function as the JSON API, so the dashboard can do nothing the API refuses.

Each change needs the session's CSRF token and the ``manage`` scope (``ChangeDep``: a
read-only session gets a 403 page and nothing changes); after it, the browser is sent
back to the page it came from with a notice (post/redirect/get), except a secret
rotation, whose answer shows the new secret once. Creating, editing and deleting an
endpoint are in :mod:`endpoint_forms`, beside their forms.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated

from fastapi import Query, Request
from fastapi.responses import Response

from services.eventlog.context import EventlogContext
from services.eventlog.dashboard.router import (
    PREFIX,
    ChangeDep,
    ContextDep,
    FormDep,
    PostDep,
    dashboard_router,
    failure_page,
    field,
    redirect,
    render,
    signer_of,
)
from services.eventlog.dashboard.session import (
    SESSION_COOKIE,
    SIGN_IN_COOKIE,
    Session,
)
from services.eventlog.dlq_api import replay
from services.eventlog.endpoints_api import (
    rotate_secret,
    send_test,
    update_endpoint,
    verify_endpoint,
)
from services.eventlog.events_api import redeliver
from services.eventlog.models import DlqReplayRequest, EndpointUpdate, RedeliverRequest
from webhooks.auth import ApiKeys
from webhooks.problems import Problem
from webhooks.registry import READ

TENANT_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dashboard_router.post("/sign-in")
async def sign_in(request: Request, ctx: ContextDep, form: FormDep) -> Response:
    """Open a session for the tenant of the API key given (an admin key names a tenant):
    a bootstrap key or a managed one, checked as the JSON API checks it (``ApiKeys``).
    The key must hold the ``read`` scope; without ``manage`` the session only looks."""
    signer = signer_of(request)
    nonce = request.cookies.get(SIGN_IN_COOKIE) or ""
    if not nonce or not signer.csrf_valid(nonce, field(form, "sign_in_token")):
        if not signer.configured:
            return _sign_in_again(request, "Sign-in is not set up on this server: it needs "
                                           "WEBHOOKS_CURSOR_SECRET (ask your administrator).")
        raise Problem(403, "the sign-in form expired or came from another site: reload it",
                      code="csrf_failed")
    api_key = field(form, "api_key") or ""
    api_keys: ApiKeys = request.app.state.api_keys
    principal = api_keys.lookup(api_key) if api_key else None
    if principal is None:
        # Never echo or log the key: the answer names no detail of what was typed.
        return _sign_in_again(request, "That API key is not valid.")
    if not principal.allows(READ):
        return _sign_in_again(request, "That API key lacks the 'read' scope, which the "
                                       "dashboard needs (a publish-only key cannot sign in).")
    tenant = principal.tenant
    if principal.is_admin:
        tenant = field(form, "tenant") or ""
        if not TENANT_PATTERN.match(tenant):
            return _sign_in_again(request, "An admin key must name the tenant to look at.")
        if ctx.registry.is_deleted(tenant):
            return _sign_in_again(request, f"Tenant {tenant} was erased.")
    cookie, lifetime = signer.issue(principal, api_key, tenant)
    response = redirect("/endpoints")
    set_session_cookie(request, response, cookie, lifetime)
    return response


def set_session_cookie(request: Request, response: Response, cookie: str, lifetime: int
                       ) -> None:
    """Give the browser the session ``cookie`` (for ``lifetime`` seconds), forget the
    sign-in form's token."""
    response.set_cookie(SESSION_COOKIE, cookie, httponly=True, samesite="strict",
                        secure=request.url.scheme == "https", path=PREFIX, max_age=lifetime)
    response.delete_cookie(SIGN_IN_COOKIE, path=PREFIX)


def _sign_in_again(request: Request, error: str) -> Response:
    """The sign-in form again (401) with ``error``, keeping its double-submit token."""
    nonce = request.cookies.get(SIGN_IN_COOKIE) or ""
    return render("sign_in.html", None, status_code=401, error=error, notice=None,
                  sign_in_token=signer_of(request).csrf_token(nonce), signed_in=False)


@dashboard_router.post("/sign-out")
async def sign_out(session: PostDep) -> Response:
    """Forget the session cookie."""
    response = redirect("/sign-in", done="signed_out")
    response.delete_cookie(SESSION_COOKIE, path=PREFIX)
    return response


@dashboard_router.post("/endpoints/{endpoint_id}/enable")
def enable_endpoint(ctx: ContextDep, session: ChangeDep, endpoint_id: str) -> Response:
    """``PATCH /v1/endpoints/{id}`` with ``disabled: false``."""
    return _set_disabled(ctx, session, endpoint_id, False)


@dashboard_router.post("/endpoints/{endpoint_id}/disable")
def disable_endpoint(ctx: ContextDep, session: ChangeDep, endpoint_id: str) -> Response:
    """``PATCH /v1/endpoints/{id}`` with ``disabled: true``."""
    return _set_disabled(ctx, session, endpoint_id, True)


def _set_disabled(ctx: EventlogContext, session: Session, endpoint_id: str, disabled: bool
                  ) -> Response:
    try:
        update_endpoint(ctx, session.tenant, endpoint_id, EndpointUpdate(disabled=disabled))
    except Problem as exc:
        return failure_page(session, exc)
    return redirect(f"/endpoints/{endpoint_id}", done="disabled" if disabled else "enabled")


@dashboard_router.post("/endpoints/{endpoint_id}/pause")
def pause_endpoint(ctx: ContextDep, session: ChangeDep, endpoint_id: str) -> Response:
    """``PATCH /v1/endpoints/{id}`` with ``paused: true``."""
    return _change(ctx, session, endpoint_id, EndpointUpdate(paused=True), "paused")


@dashboard_router.post("/endpoints/{endpoint_id}/resume")
def resume_endpoint(ctx: ContextDep, session: ChangeDep, endpoint_id: str) -> Response:
    """``PATCH /v1/endpoints/{id}`` with ``paused: false``."""
    return _change(ctx, session, endpoint_id, EndpointUpdate(paused=False), "resumed")


def _change(ctx: EventlogContext, session: Session, endpoint_id: str, change: EndpointUpdate,
            done: str) -> Response:
    try:
        update_endpoint(ctx, session.tenant, endpoint_id, change)
    except Problem as exc:
        return failure_page(session, exc)
    return redirect(f"/endpoints/{endpoint_id}", done=done)


@dashboard_router.post("/endpoints/{endpoint_id}/verify")
def verify_endpoint_again(ctx: ContextDep, session: ChangeDep, endpoint_id: str
                          ) -> Response:
    """``POST /v1/endpoints/{id}/verify``: a new challenge to the receiver."""
    try:
        verify_endpoint(ctx, session.tenant, endpoint_id)
    except Problem as exc:
        return failure_page(session, exc)
    return redirect(f"/endpoints/{endpoint_id}", done="verifying")


@dashboard_router.post("/endpoints/{endpoint_id}/rotate-secret")
def rotate_endpoint_secret(ctx: ContextDep, session: ChangeDep, endpoint_id: str
                           ) -> Response:
    """``POST /v1/endpoints/{id}/rotate-secret``; shows the new secret this once."""
    try:
        rotated = rotate_secret(ctx, session.tenant, endpoint_id)
    except Problem as exc:
        return failure_page(session, exc)
    return render("secret.html", session, endpoint=rotated, active="endpoints",
                  overlap_hours=ctx.settings.secret_rotation_overlap / 3600)


@dashboard_router.post("/endpoints/{endpoint_id}/test")
def test_endpoint(ctx: ContextDep, session: ChangeDep, endpoint_id: str) -> Response:
    """``POST /v1/endpoints/{id}/test``: a ``webhook.test`` event through the normal path."""
    try:
        send_test(ctx, session.tenant, endpoint_id)
    except Problem as exc:
        return failure_page(session, exc)
    return redirect(f"/endpoints/{endpoint_id}", done="tested")


@dashboard_router.post("/events/{event_id}/redeliver")
def redeliver_event(ctx: ContextDep, session: ChangeDep, form: FormDep, event_id: str
                    ) -> Response:
    """``POST /v1/events/{id}/redeliver`` to the endpoint named in the form (or all)."""
    try:
        queued = redeliver(ctx, session.tenant, event_id,
                           RedeliverRequest(endpoint_id=field(form, "endpoint_id")))
    except Problem as exc:
        return failure_page(session, exc)
    return redirect(f"/events/{event_id}", done="redelivered", n=queued.queued)


@dashboard_router.post("/dlq/replay")
def replay_dead_tasks(ctx: ContextDep, session: ChangeDep, form: FormDep,
                      only: Annotated[str | None, Query(max_length=80)] = None) -> Response:
    """``POST /v1/dlq/replay``: one task (``?only=``, a row's own button), the ticked ids
    (``id`` fields), or by the filter fields when ``scope=filter`` (at least one filter,
    as the API demands)."""
    try:
        if field(form, "scope") == "filter":
            request = DlqReplayRequest(
                endpoint_id=field(form, "endpoint_id"), type=field(form, "type"),
                created_after=_moment(field(form, "created_after")),
                created_before=_moment(field(form, "created_before")))
        else:
            ids = [only] if only else [value for value in form.get("id", []) if value.strip()]
            if not ids:
                raise Problem(400, "tick at least one dead task to replay",
                              code="invalid_parameter")
            request = DlqReplayRequest(ids=ids)
        replayed = replay(ctx, session.tenant, request)
    except Problem as exc:
        return failure_page(session, exc)
    except ValueError as exc:  # the form's fields failed the API's own request model
        return failure_page(session, Problem(422, f"replay: {exc}"))
    return redirect("/dlq", done="replay_skipped" if replayed.skipped else "replayed",
                    n=replayed.queued, skipped=replayed.skipped or None)


def _moment(text: str | None) -> datetime | None:
    """A ``datetime-local`` field's value, read as UTC."""
    if text is None:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError as exc:
        raise Problem(400, f"{text!r} is not a date and time", code="invalid_parameter") from exc
