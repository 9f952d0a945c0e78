"""Dependencies of the eventlog routes, as ``Annotated`` aliases.

Each reads the state of the app serving the request (``app.state``, set by
``create_app``), so apps built with different settings can run side by side.
Every one is ``async`` on purpose: none does I/O, and a sync dependency would cost a
thread-pool hop per request.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Request

from services.eventlog.context import EventlogContext
from webhooks.auth import Principal, authenticate
from webhooks.problems import Problem


async def get_context(request: Request) -> EventlogContext:
    """The stores, producer and policies of the app serving ``request``."""
    context: EventlogContext = request.app.state.context
    return context


ContextDep = Annotated[EventlogContext, Depends(get_context)]
PrincipalDep = Annotated[Principal, Depends(authenticate)]


async def resolve_tenant(
    principal: PrincipalDep,
    tenant: Annotated[str | None, Query(
        description="Admin keys only: the tenant to act for.",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")] = None,
) -> str:
    """The tenant a request acts for.

    A tenant key acts for its own tenant. An admin key must name one with ``?tenant=``.
    """
    if principal.is_admin:
        if not tenant:
            raise Problem(400, "admin keys must name a tenant with ?tenant=")
        return tenant
    if tenant is not None and tenant != principal.tenant:
        raise Problem(403, "only admin keys may act for another tenant")
    return principal.tenant


TenantDep = Annotated[str, Depends(resolve_tenant)]
