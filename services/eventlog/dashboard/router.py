"""What the dashboard's pages and actions share: the router, sessions, CSRF, scopes, rendering.

Pages answer HTML; a request without a valid session is sent to the sign-in page (303),
with a notice when the browser had a session that ended (its key revoked or expired, its
tenant erased). Pages need the ``read`` scope (a session without it is no session).
Every POST except sign-in needs the session's CSRF token in the form field
``csrf_token``; without it the answer is a 403 problem and nothing changes. Every change
(``ChangeDep``) and the forms that lead to one (``ManageSessionDep``) also need the
``manage`` scope: a session without it gets a 403 page and nothing changes. Sign-in itself
is guarded by a double-submit token (cookie and form field), so another site cannot sign a
browser in to an attacker's tenant.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from jinja2 import Environment, FileSystemLoader, select_autoescape

from services.eventlog.context import EventlogContext
from services.eventlog.dashboard.session import (
    SESSION_COOKIE,
    SIGN_IN_COOKIE,
    Session,
    SessionSigner,
)
from webhooks.envelope import format_timestamp
from webhooks.problems import Problem
from webhooks.registry import MANAGE

PREFIX = "/dashboard"
MAX_FORM_BYTES = 64 * 1024
# Pages never run inline script and load nothing from elsewhere (installations are often
# offline, and a strict policy blunts any injection the escaping missed).
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                               "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class Refused(Exception):
    """Raised (by a dependency too) to answer with ``response``: a page or a redirect."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


class DashboardRoute(APIRoute):
    """A dashboard route: a :class:`Refused` raised while serving it is its answer."""

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        handler = super().get_route_handler()

        async def refusing(request: Request) -> Response:
            try:
                return await handler(request)
            except Refused as refused:
                return refused.response

        return refusing


dashboard_router = APIRouter(prefix=PREFIX, include_in_schema=False,
                             route_class=DashboardRoute)

_templates = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=select_autoescape(default=True), trim_blocks=True, lstrip_blocks=True)


def _when(value: Any) -> str:
    """A timestamp as the pages show it (UTC, to the second)."""
    if value is None:
        return "–"
    text = format_timestamp(value) if not isinstance(value, str) else value
    return text[:19].replace("T", " ")


def _percent(rate: float | None) -> str:
    return "–" if rate is None else f"{rate * 100:.1f} %"


_templates.filters["when"] = _when
_templates.filters["percent"] = _percent


def signer_of(request: Request) -> SessionSigner:
    """The app's session signer, built once from its settings."""
    state = request.app.state
    signer: SessionSigner | None = getattr(state, "dashboard_signer", None)
    if signer is None:
        context: EventlogContext = state.context
        signer = state.dashboard_signer = SessionSigner(context.settings, context.registry)
    return signer


async def get_context(request: Request) -> EventlogContext:
    """The eventlog's stores and producer (the same objects the JSON API uses)."""
    context: EventlogContext = request.app.state.context
    return context


async def optional_session(request: Request) -> Session | None:
    """The browser's session, or None."""
    return signer_of(request).open(request.cookies.get(SESSION_COOKIE))


async def require_session(
        request: Request,
        session: Annotated[Session | None, Depends(optional_session)]) -> Session:
    """The browser's session; a redirect to the sign-in page without one (saying that
    the session ended, and forgetting its cookie, when the browser had one)."""
    if session is None:
        if request.cookies.get(SESSION_COOKIE):
            response = redirect("/sign-in", done="session_ended")
            response.delete_cookie(SESSION_COOKIE, path=PREFIX)
            raise Refused(response)
        raise Refused(redirect("/sign-in"))
    return session


def require_manage(session: Session) -> Session:
    """``session`` if it may change things; else a 403 page naming the scope it lacks."""
    if not session.can_manage:
        raise Refused(failure_page(session, Problem(
            403, "This session can only look: changing endpoints, redelivering and "
                 "replaying need an API key with the 'manage' scope. Sign in with such a "
                 "key to make changes.", title="Read-only session", code="missing_scope")))
    return session


async def managing_session(session: Annotated[Session, Depends(require_session)]) -> Session:
    """The session of a page that leads to a change (a form); 403 page without ``manage``."""
    return require_manage(session)


async def form_fields(request: Request) -> dict[str, list[str]]:
    """The fields of an ``application/x-www-form-urlencoded`` POST (each a list)."""
    if not request.headers.get("content-type", "").startswith(
            "application/x-www-form-urlencoded"):
        raise Problem(415, "the dashboard takes form posts (application/x-www-form-urlencoded)")
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise Problem(413, f"form larger than {MAX_FORM_BYTES} bytes")
    return parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True)


FormDep = Annotated[dict[str, list[str]], Depends(form_fields)]
ContextDep = Annotated[EventlogContext, Depends(get_context)]


async def checked_session(
        request: Request, form: FormDep,
        session: Annotated[Session, Depends(require_session)]) -> Session:
    """The session of a post whose CSRF token is right; else 403 (or sign in)."""
    if not signer_of(request).csrf_valid(session.nonce, field(form, "csrf_token")):
        raise Problem(403, "missing or invalid CSRF token: reload the page and try again",
                      code="csrf_failed")
    return session


async def changing_session(
        session: Annotated[Session, Depends(checked_session)]) -> Session:
    """The session of a change: right CSRF token and the ``manage`` scope (else 403)."""
    return require_manage(session)


# Pages (read); forms that lead to a change (manage); posts of any session (CSRF only:
# signing out); changes (CSRF and manage).
SessionDep = Annotated[Session, Depends(require_session)]
ManageSessionDep = Annotated[Session, Depends(managing_session)]
PostDep = Annotated[Session, Depends(checked_session)]
ChangeDep = Annotated[Session, Depends(changing_session)]


def field(form: dict[str, list[str]], name: str) -> str | None:
    """The first value of form field ``name`` (None if absent or blank)."""
    values = form.get(name) or [""]
    return values[0].strip() or None


def render(template: str, session: Session | None, status_code: int = 200,
           **values: Any) -> HTMLResponse:
    """``template`` rendered with ``values``, the session and the security headers."""
    html = _templates.get_template(template).render(
        session=session, csrf_token=session.csrf_token if session else None, prefix=PREFIX,
        can_manage=session is not None and session.allows(MANAGE), **values)
    return HTMLResponse(html, status_code=status_code, headers=SECURITY_HEADERS)


def sign_in_form(request: Request, *, status_code: int = 200, error: str | None = None,
                 notice: str | None = None, signed_in: bool = False) -> HTMLResponse:
    """The sign-in form with a fresh double-submit token (in a cookie and a hidden field)."""
    signer = signer_of(request)
    nonce = secrets.token_urlsafe(16)
    if error is None and not signer.configured:
        error = ("Sign-in is not set up on this server: it needs WEBHOOKS_CURSOR_SECRET "
                 "(ask your administrator).")
    response = render("sign_in.html", None, status_code=status_code,
                      sign_in_token=signer.csrf_token(nonce), signed_in=signed_in,
                      notice=notice, error=error)
    response.set_cookie(SIGN_IN_COOKIE, nonce, httponly=True, samesite="strict",
                        secure=request.url.scheme == "https", path=PREFIX, max_age=3600)
    return response


def redirect(path: str, **query: str | int | None) -> Response:
    """303 to ``PREFIX + path`` (after a POST: the browser then GETs the page)."""
    given = {name: value for name, value in query.items() if value not in (None, "")}
    target = PREFIX + path + ("?" + urlencode(given) if given else "")
    return RedirectResponse(target, status_code=303, headers=SECURITY_HEADERS)


def failure_page(session: Session | None, exc: Problem) -> HTMLResponse:
    """What an action that the API would refuse shows: its problem, as a page."""
    return render("failure.html", session, status_code=exc.status, problem=exc)
