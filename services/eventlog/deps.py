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
from webhooks.registry import MANAGE, READ


async def get_context(request: Request) -> EventlogContext:
    """The stores, producer and policies of the app serving ``request``."""
    context: EventlogContext = request.app.state.context
    return context


ContextDep = Annotated[EventlogContext, Depends(get_context)]
PrincipalDep = Annotated[Principal, Depends(authenticate)]


TenantQuery = Annotated[str | None, Query(
    description="Admin keys only: the tenant to act for.",
    pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]


def _tenant_of(principal: Principal, tenant: str | None, context: EventlogContext) -> str:
    """The tenant a request acts for.

    A tenant key acts for its own tenant. An admin key must name one with ``?tenant=``;
    an erased tenant is gone for admins too.
    """
    if principal.is_admin:
        if not tenant:
            raise Problem(400, "admin keys must name a tenant with ?tenant=")
        if context.registry.is_deleted(tenant):
            raise Problem(404, f"tenant {tenant} was erased")
        return tenant
    if tenant is not None and tenant != principal.tenant:
        raise Problem(403, "only admin keys may act for another tenant")
    return principal.tenant


async def reading_tenant(principal: PrincipalDep, context: ContextDep,
                         tenant: TenantQuery = None) -> str:
    """The tenant a request that reads acts for; 403 without the ``read`` scope."""
    return _tenant_of(principal.require(READ), tenant, context)


async def managing_tenant(principal: PrincipalDep, context: ContextDep,
                          tenant: TenantQuery = None) -> str:
    """The tenant a request that changes something acts for; 403 without ``manage``."""
    return _tenant_of(principal.require(MANAGE), tenant, context)


async def admin(principal: PrincipalDep) -> Principal:
    """The caller, who must hold the ``admin`` scope (403 otherwise)."""
    if not principal.is_admin:
        raise Problem(403, "this API key lacks the 'admin' scope", code="missing_scope")
    return principal


ReadTenantDep = Annotated[str, Depends(reading_tenant)]
ManageTenantDep = Annotated[str, Depends(managing_tenant)]
AdminDep = Annotated[Principal, Depends(admin)]
