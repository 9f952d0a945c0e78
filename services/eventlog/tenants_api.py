"""``/v1/tenants``: the admin API over the tenant and key registry (:mod:`webhooks.registry`).

Every route needs an admin key. Writes go to the compacted registry topic, acknowledged
by Kafka before the answer, and are applied to this replica's view at once; every other
replica of every service picks them up from the topic (within a fetch, ~0.1 s).

A key's secret is answered once, at creation; the registry keeps only its SHA-256.
Admin keys belong to the pseudo-tenant ``*`` (``/v1/tenants/*/keys``).

``POST /v1/tenants/{id}/dashboard-links`` mints a short-lived dashboard sign-in link for
the tenant (:mod:`services.eventlog.dashboard.links`): nothing is written, the link is a
signed token any eventlog replica accepts.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from services.eventlog.context import PROBLEM_RESPONSES, EventlogContext
from services.eventlog.dashboard.links import mint_link
from services.eventlog.dashboard.session import LINK_SECONDS_DEFAULT, LINK_SECONDS_MAX
from services.eventlog.deps import AdminDep, ContextDep
from services.eventlog.tenant_erasure import Erasure, erase_tenant
from webhooks.envelope import utcnow
from webhooks.problems import Problem
from webhooks.registry import (
    ADMIN,
    KEY_RECORD,
    SCOPES,
    SHOWN_PREFIX_LENGTH,
    TENANT_RECORD,
    TENANT_SCOPES,
    USAGE_RECORD,
    ApiKeyRecord,
    Tenant,
    key_digest,
    new_api_key,
    new_key_id,
)
from webhooks.settings import ADMIN_TENANT

TENANT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
TENANT_ID = Path(description="Tenant id.", pattern=TENANT_ID_PATTERN)
# The key routes also take "*": the admin keys.
KEY_OWNER = Path(description="Tenant id, or * for admin keys.",
                 pattern=r"^(\*|[A-Za-z0-9][A-Za-z0-9_.-]{0,63})$")
KEY_ID = Path(description="Key id (key_…).", pattern=r"^key_[0-9A-Za-z]{1,64}$")
# How long a write waits for the registry to have read every earlier record first.
CATCH_UP_TIMEOUT = 15.0
WRITE_TIMEOUT = 10.0

Metadata = Annotated[dict[str, Annotated[str, Field(max_length=1000)]],
                     Field(max_length=50, description="Free-form string labels.")]


class TenantCreate(BaseModel):
    """``POST /v1/tenants``."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=TENANT_ID_PATTERN, description="The tenant id events carry.")
    name: str = Field(default="", max_length=200)
    metadata: Metadata = Field(default_factory=dict)


class TenantUpdate(BaseModel):
    """``PATCH /v1/tenants/{id}``: the fields given change."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, max_length=200)
    metadata: Metadata | None = None
    disabled: bool | None = Field(default=None, description="A disabled tenant's events are "
                                  "refused at ingest (403); everything else is kept.")


class TenantOut(BaseModel):
    id: str
    name: str
    metadata: dict[str, str]
    disabled: bool
    created: datetime
    updated: datetime

    @classmethod
    def of(cls, tenant: Tenant) -> TenantOut:
        return cls.model_validate(tenant.model_dump(exclude={"deleted"}))


class TenantPage(BaseModel):
    """Tenants by id; ``next_cursor`` (absent at the end) resumes after this page."""

    data: list[TenantOut]
    has_more: bool
    next_cursor: str | None = None


class KeyCreate(BaseModel):
    """``POST /v1/tenants/{id}/keys``."""

    model_config = ConfigDict(extra="forbid")

    scopes: list[str] | None = Field(default=None, min_length=1,
                                     description="Of publish, read, manage (tenant keys; "
                                                 "default all three); admin (admin keys, "
                                                 "tenant *; the default there).")
    description: str = Field(default="", max_length=200)
    expires_in: float | None = Field(default=None, gt=0, le=10 * 365 * 86400,
                                     description="Seconds until the key stops working.")


class KeyOut(BaseModel):
    """A key as listed: never its secret."""

    id: str
    tenant: str
    prefix: str
    scopes: list[str]
    description: str
    created: datetime
    expires: datetime | None
    last_used: datetime | None = Field(default=None, description="Approximate (~1 minute).")

    @classmethod
    def of(cls, record: ApiKeyRecord, last_used: datetime | None = None) -> KeyOut:
        return cls.model_validate({**record.model_dump(exclude={"sha256"}),
                                   "last_used": last_used})


class KeyCreated(KeyOut):
    """A new key, with its secret: shown this once, kept nowhere."""

    key: str


class KeyList(BaseModel):
    data: list[KeyOut]


class DashboardLinkCreate(BaseModel):
    """``POST /v1/tenants/{id}/dashboard-links``."""

    model_config = ConfigDict(extra="forbid")

    expires_in: float = Field(default=LINK_SECONDS_DEFAULT, gt=0, le=LINK_SECONDS_MAX,
                              description="Seconds until the link stops opening sessions "
                                          "(at most 24 h); its sessions end then too.")


class DashboardLink(BaseModel):
    """A dashboard sign-in link for one tenant: hand ``url`` to the tenant. It holds no API
    key; anyone who has it can sign in until ``expires``."""

    url: str = Field(description="Absolute, from the base URL this request reached the "
                                 "eventlog at.")
    path: str = Field(description="The same link relative to the eventlog's origin (to put "
                                  "behind your public origin when a proxy rewrites it).")
    tenant: str
    scopes: list[str]
    expires: datetime


tenants_router = APIRouter(prefix="/v1/tenants", tags=["tenants"], responses=PROBLEM_RESPONSES)


def _write(ctx: EventlogContext, key: str, value: bytes | None) -> None:
    """One registry record, acknowledged by Kafka."""
    ctx.producer.produce(ctx.topics.registry, value, key=key.encode()).result(WRITE_TIMEOUT)


def _catch_up(ctx: EventlogContext) -> None:
    """Read every earlier registry record before deriving a change (503 if Kafka lags)."""
    if not ctx.registry.catch_up(CATCH_UP_TIMEOUT):
        raise Problem(503, "the registry is not caught up with Kafka; retry shortly",
                      headers={"Retry-After": "2"})


def _tenant(ctx: EventlogContext, tenant_id: str) -> Tenant:
    tenant = ctx.registry.tenant(tenant_id)
    if tenant is None or tenant.deleted is not None:
        raise Problem(404, f"no tenant {tenant_id}")
    return tenant


def _save_tenant(ctx: EventlogContext, tenant: Tenant) -> Tenant:
    _write(ctx, TENANT_RECORD + tenant.id, tenant.to_json())
    ctx.registry.put_tenant(tenant)
    return tenant


@tenants_router.post("", status_code=201, response_model=TenantOut, summary="Create a tenant")
def create_tenant(ctx: ContextDep, _: AdminDep, request: TenantCreate) -> TenantOut:
    """A new tenant; give it keys with ``POST /v1/tenants/{id}/keys``."""
    _catch_up(ctx)
    existing = ctx.registry.tenant(request.id)
    if existing is not None:
        why = "was erased; choose another id" if existing.deleted else "exists"
        raise Problem(409, f"tenant {request.id} {why}")
    now = utcnow()
    tenant = Tenant(id=request.id, name=request.name, metadata=request.metadata,
                    created=now, updated=now)
    return TenantOut.of(_save_tenant(ctx, tenant))


@tenants_router.get("", response_model=TenantPage, summary="List tenants")
def list_tenants(ctx: ContextDep, _: AdminDep,
                 limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                 cursor: Annotated[str | None, Query(
                     description="next_cursor of the previous page.", max_length=64)] = None
                 ) -> TenantPage:
    """Tenants by id, ``limit`` at a time."""
    tenants = [t for t in ctx.registry.tenants() if cursor is None or t.id > cursor]
    page = tenants[:limit]
    more = len(tenants) > limit
    return TenantPage(data=[TenantOut.of(t) for t in page], has_more=more,
                      next_cursor=page[-1].id if more else None)


@tenants_router.get("/{tenant_id}", response_model=TenantOut, summary="One tenant")
def get_tenant(ctx: ContextDep, _: AdminDep,
               tenant_id: Annotated[str, TENANT_ID]) -> TenantOut:
    return TenantOut.of(_tenant(ctx, tenant_id))


@tenants_router.patch("/{tenant_id}", response_model=TenantOut, summary="Change a tenant")
def update_tenant(ctx: ContextDep, _: AdminDep, tenant_id: Annotated[str, TENANT_ID],
                  request: TenantUpdate) -> TenantOut:
    """Change the fields given; ``disabled: true`` refuses the tenant's events at ingest
    (nothing is deleted), ``false`` accepts them again."""
    _catch_up(ctx)
    tenant = _tenant(ctx, tenant_id)
    changes = {name: value for name, value in request.model_dump(exclude_unset=True).items()
               if value is not None}
    return TenantOut.of(_save_tenant(ctx, tenant.model_copy(
        update={**changes, "updated": utcnow()})))


@tenants_router.delete("/{tenant_id}", response_model=Erasure, summary="Erase a tenant")
def delete_tenant(ctx: ContextDep, _: AdminDep,
                  tenant_id: Annotated[str, TENANT_ID]) -> Erasure:
    """Erase the tenant: its keys stop working and its events are refused everywhere at
    once; its events, attempts, DLQ rows and endpoints leave ClickHouse; its endpoint,
    endpoint-health and key records are tombstoned. Answers what was removed and what
    only retention removes (records on the event, retry and DLQ topics). Repeatable: a
    repeat finishes an erasure that failed half-way (and finds nothing more to remove)."""
    _catch_up(ctx)
    tenant = ctx.registry.tenant(tenant_id)
    if tenant is None:
        raise Problem(404, f"no tenant {tenant_id}")
    if tenant.deleted is None:
        # First the marker every replica acts on: keys refused, events dropped.
        now = utcnow()
        _save_tenant(ctx, tenant.model_copy(update={"deleted": now, "updated": now}))
    # (Again for an erased tenant: an erasure that failed half-way is finished by a repeat.)
    keys = ctx.registry.keys_of(tenant_id)
    for record in keys:
        _revoke(ctx, record.id)
    return erase_tenant(ctx, tenant_id, keys_revoked=len(keys))


@tenants_router.post("/{tenant_id}/dashboard-links", status_code=201,
                     response_model=DashboardLink, summary="Mint a dashboard sign-in link")
def create_dashboard_link(ctx: ContextDep, _: AdminDep, http: Request,
                          tenant_id: Annotated[str, TENANT_ID],
                          request: DashboardLinkCreate | None = None) -> DashboardLink:
    """A signed link that opens a dashboard session of the tenant (scopes read and
    manage) until ``expires_in`` seconds from now (default 1 h, at most 24 h), on any
    eventlog replica. Its sessions end with it at the latest, or when the tenant is erased.
    No API key is in it, and nothing is stored: a link cannot be revoked on its own."""
    _tenant(ctx, tenant_id)
    expires_in = (request or DashboardLinkCreate()).expires_in
    link = mint_link(http, tenant_id, expires_in)
    return DashboardLink(url=str(http.base_url).rstrip("/") + link.path, path=link.path,
                         tenant=tenant_id, scopes=list(link.scopes), expires=link.expires)


@tenants_router.post("/{tenant_id}/keys", status_code=201, response_model=KeyCreated,
                     summary="Create an API key")
def create_key(ctx: ContextDep, _: AdminDep, tenant_id: Annotated[str, KEY_OWNER],
               request: KeyCreate) -> KeyCreated:
    """A new key for the tenant (``*``: an admin key). Its secret is in this answer only."""
    allowed = (ADMIN,) if tenant_id == ADMIN_TENANT else TENANT_SCOPES
    scopes = list(dict.fromkeys(request.scopes or allowed))
    bad = [s for s in scopes if s not in allowed]
    if bad:
        where = "admin keys (tenant *)" if tenant_id == ADMIN_TENANT else "tenant keys"
        raise Problem(422, f"scopes: {bad} not allowed for {where}; use {list(allowed)} "
                           f"(known scopes: {list(SCOPES)})")
    if tenant_id != ADMIN_TENANT:
        _tenant(ctx, tenant_id)
    secret = new_api_key()
    now = utcnow()
    record = ApiKeyRecord(
        id=new_key_id(), tenant=tenant_id, prefix=secret[:SHOWN_PREFIX_LENGTH],
        sha256=key_digest(secret), scopes=scopes, description=request.description,
        created=now,
        expires=None if request.expires_in is None else now + timedelta(seconds=request.expires_in))
    _write(ctx, KEY_RECORD + record.id, record.to_json())
    ctx.registry.put_key(record)
    return KeyCreated.model_validate({**KeyOut.of(record).model_dump(), "key": secret})


@tenants_router.get("/{tenant_id}/keys", response_model=KeyList, summary="List API keys")
def list_keys(ctx: ContextDep, _: AdminDep, tenant_id: Annotated[str, KEY_OWNER]) -> KeyList:
    """The tenant's keys (never their secrets), oldest first."""
    if tenant_id != ADMIN_TENANT:
        _tenant(ctx, tenant_id)
    registry = ctx.registry
    return KeyList(data=[KeyOut.of(k, registry.last_used(k.id))
                         for k in registry.keys_of(tenant_id)])


@tenants_router.delete("/{tenant_id}/keys/{key_id}", status_code=204, response_class=Response,
                       summary="Revoke an API key")
def revoke_key(ctx: ContextDep, _: AdminDep, tenant_id: Annotated[str, KEY_OWNER],
               key_id: Annotated[str, KEY_ID]) -> Response:
    """The key stops working on every replica (within ~0.1 s of this answer)."""
    _catch_up(ctx)  # a key another replica created a moment ago
    record = ctx.registry.key(key_id)
    if record is None or record.tenant != tenant_id:
        raise Problem(404, f"no key {key_id} for tenant {tenant_id}")
    _revoke(ctx, key_id)
    return Response(status_code=204)


def _revoke(ctx: EventlogContext, key_id: str) -> None:
    _write(ctx, KEY_RECORD + key_id, None)
    _write(ctx, USAGE_RECORD + key_id, None)
    ctx.registry.remove_key(key_id)
