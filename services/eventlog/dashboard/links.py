"""Sign-in links: an admin mints one for a tenant (``POST /v1/tenants/{id}/dashboard-links``,
in :mod:`services.eventlog.tenants_api`) and hands it to the tenant, who signs in to the
dashboard without ever putting an API key in a browser (like Svix's app-portal links).

The link carries a signed token (:meth:`SessionSigner.issue_link`: tenant, scopes
``read`` and ``manage``, expiry; no key), MAC-keyed like the session cookie, so any
eventlog replica accepts it. Opening it (``GET /dashboard/sign-in/link?token=…``) opens a
session that ends with the link's expiry at the latest, or when the tenant is erased, and
sends the browser on with a 303, so the token leaves the address bar (and, with
``Referrer-Policy: no-referrer``, is never sent on). A link may be opened more than once
until it expires: keep links short-lived.

The 303 leads to a small page that moves on to the endpoints itself (a meta refresh).
A link is usually opened from another site (a mail, a chat), and browsers do not send a
``SameSite=Strict`` cookie on any request of a navigation another site started,
redirects included; the page's own navigation is same-site, so the new session's cookie
goes with it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import Response

from services.eventlog.dashboard.actions import set_session_cookie
from services.eventlog.dashboard.router import (
    PREFIX,
    dashboard_router,
    optional_session,
    redirect,
    render,
    sign_in_form,
    signer_of,
)
from services.eventlog.dashboard.session import (
    LINK_SCOPES,
    LinkRefused,
    NotConfigured,
)
from webhooks.problems import Problem

LINK_PATH = f"{PREFIX}/sign-in/link"
CONTINUE_PATH = "/sign-in/continue"


@dataclass(frozen=True)
class MintedLink:
    """A sign-in link: its path (with the token), when it expires, what it grants."""

    path: str
    expires: datetime
    scopes: tuple[str, ...]


def mint_link(request: Request, tenant: str, expires_in: float) -> MintedLink:
    """A sign-in link of ``tenant`` valid for ``expires_in`` seconds (the caller checks
    the tenant and the bound); a 503 problem if the server has no key to sign it with."""
    expires = math.floor(time.time() + expires_in)
    try:
        token = signer_of(request).issue_link(tenant, expires, LINK_SCOPES)
    except NotConfigured as exc:
        raise Problem(503, f"{exc}; no link can be signed until then",
                      code="not_configured") from exc
    return MintedLink(path=f"{LINK_PATH}?{urlencode({'token': token})}",
                      expires=datetime.fromtimestamp(expires, UTC), scopes=LINK_SCOPES)


@dashboard_router.get("/sign-in/link")
async def sign_in_with_link(request: Request, token: str = "") -> Response:
    """Open a session for the link's tenant, then 303 on (the token leaves the address
    bar); a refused link (forged, altered, expired, malformed or too long, or its tenant
    erased since) gets the sign-in page with the reason and no session."""
    signer = signer_of(request)
    try:
        grant = signer.open_link(token)
    except LinkRefused as refused:
        return sign_in_form(request, status_code=401, error=str(refused))
    cookie, lifetime = signer.issue_for_link(grant)
    response = redirect(CONTINUE_PATH)
    set_session_cookie(request, response, cookie, lifetime)
    return response


@dashboard_router.get(CONTINUE_PATH)
async def continue_after_link(request: Request) -> Response:
    """Where a link leads: straight to the endpoints when the session cookie came along,
    else a page that goes there itself (same-site, so the cookie goes too)."""
    if await optional_session(request) is not None:
        return redirect("/endpoints")
    return render("continue.html", None, target=f"{PREFIX}/endpoints")
