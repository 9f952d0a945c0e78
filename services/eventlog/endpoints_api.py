"""``/v1/endpoints``: endpoint management, secret rotation, test sends, attempt logs (a page,
or one attempt with its headers), recovery."""

from __future__ import annotations

import threading
import zlib
from datetime import datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Body, Header, Path, Query, Response

from services.eventlog.context import PROBLEM_RESPONSES, EventlogContext, page_response
from services.eventlog.deps import ContextDep, ManageTenantDep, ReadTenantDep
from services.eventlog.endpoint_store import EndpointFilters
from services.eventlog.event_store import AttemptFilters, EventFilters
from services.eventlog.listing import CursorQuery, LimitQuery, checked_range
from services.eventlog.models import (
    MAX_LISTED_TASKS,
    AttemptOut,
    AttemptPage,
    EndpointCreate,
    EndpointCreated,
    EndpointOut,
    EndpointPage,
    EndpointSecrets,
    EndpointUpdate,
    Queued,
    RecoverRequest,
)
from webhooks.endpoint_verification import pending, verification_request
from webhooks.endpoints import Endpoint, EndpointIdempotency, EndpointSecret, new_endpoint_id
from webhooks.envelope import Envelope, utcnow
from webhooks.problems import Problem
from webhooks.signing import generate_secret
from webhooks.target_policy import TargetRefused

ENDPOINT_ID = Path(description="Endpoint id (ep_…).", max_length=80)
ATTEMPT_ID = Path(description="Attempt id (att_…).", max_length=80)
TEST_EVENT_TYPE = "webhook.test"
ERROR_CLASS_PATTERN = r"^[a-z][a-z_]{0,39}$"
REPLAYED_HEADER = "Idempotent-Replayed"  # as ingest answers a repeated event
IdempotencyKeyHeader = Annotated[str | None, Header(
    alias="Idempotency-Key", pattern=r"^[\x20-\x7e]{1,255}$",
    description="A retry with the same key (same tenant, within WEBHOOKS_IDEMPOTENCY_WINDOW, "
                "24 h by default) and the same body answers 200 with the endpoint the first "
                "request created, and `Idempotent-Replayed: true`; with another body, 422.")]
# Keyed creates on one replica run one at a time per key (striped locks): a retry racing
# the first request on the same replica finds its endpoint. Across replicas that race
# stays open (see create_endpoint).
_CREATE_LOCKS = [threading.Lock() for _ in range(64)]


# Routes over the endpoints of the caller's tenant.
endpoints_router = APIRouter(prefix="/v1/endpoints", tags=["endpoints"],
                             responses=PROBLEM_RESPONSES)


def _check_url(ctx: EventlogContext, url: str) -> None:
    """422 unless the target policy lets webhooks go to ``url``."""
    try:
        ctx.targets.check_url(url)
    except TargetRefused as exc:
        raise Problem(422, f"url: {exc}") from exc


def _check_tls_target(url: str, has_tls: bool) -> None:
    """422 for TLS material on an endpoint whose URL is not https (it would go unused)."""
    if has_tls and not url.lower().startswith("https://"):
        raise Problem(422, "tls: TLS material needs an https url (remove it with tls: null, "
                           "or change the url to https)")


def _load(ctx: EventlogContext, tenant: str, endpoint_id: str, to_change: bool = False
          ) -> Endpoint:
    """The endpoint, or 404; ``to_change``: the latest record, to derive a write from."""
    store = ctx.endpoints
    endpoint = (store.latest if to_change else store.get)(tenant, endpoint_id)
    if endpoint is None:
        raise Problem(404, f"no endpoint {endpoint_id}")
    return endpoint


@endpoints_router.post("", status_code=201, response_model=EndpointCreated,
                       summary="Create an endpoint",
                       responses={200: {"description": "A retry with the same Idempotency-Key: "
                                                       "the endpoint the first request created"}})
def create_endpoint(ctx: ContextDep, tenant: ManageTenantDep, request: EndpointCreate,
                    response: Response, idempotency_key: IdempotencyKeyHeader = None
                    ) -> EndpointCreated:
    """Subscribe a URL to event types; answers with the id and the signing secret.

    With an ``Idempotency-Key``, a retry (same tenant, within the idempotency window) gets
    the endpoint the first request created, same id and secret, with 200 and
    ``Idempotent-Replayed: true``; the same key with another body is a 422 naming the
    fields that differ. The key is kept on the endpoint record, so it holds across
    restarts, and is forgotten when the endpoint is deleted. Retries on one replica are
    serialised; two replicas receiving the same key at the same instant may both create
    an endpoint (a narrow race: both records carry the key, and later retries get the
    older one).
    """
    if idempotency_key is None:
        return _created(ctx, _new_endpoint(ctx, tenant, request), request.verify)
    digests = request.digests(ctx.cursor_key)
    lock = _CREATE_LOCKS[zlib.crc32(f"{tenant}\0{idempotency_key}".encode()) % len(_CREATE_LOCKS)]
    with lock:
        first = _created_with(ctx, tenant, idempotency_key)
        if first is None:
            endpoint = _new_endpoint(ctx, tenant, request).model_copy(update={
                "idempotency": EndpointIdempotency(key=idempotency_key, fields=digests)})
            return _created(ctx, endpoint, request.verify)
    assert first.idempotency is not None
    differing = sorted(name for name in {*digests, *first.idempotency.fields}
                       if digests.get(name) != first.idempotency.fields.get(name))
    if differing:
        raise Problem(422, f"Idempotency-Key: already used to create {first.id} with other "
                           f"values of {', '.join(differing)}; send the same body again, or "
                           "use a new key for a new endpoint")
    response.status_code = 200
    response.headers[REPLAYED_HEADER] = "true"
    return EndpointCreated.of(first, ctx.endpoints.keyring)


def _new_endpoint(ctx: EventlogContext, tenant: str, request: EndpointCreate) -> Endpoint:
    """The endpoint ``request`` asks for (not saved yet); 422 for a refused URL."""
    _check_url(ctx, request.url)
    _check_tls_target(request.url, request.tls is not None)
    now = utcnow()
    return Endpoint(
        id=new_endpoint_id(), tenant=tenant, url=request.url, events=request.events,
        # Plain here; the store seals it (and every other secret) as it writes the record.
        secrets=[EndpointSecret(secret=request.secret or generate_secret())],
        description=request.description, rate_limit=request.rate_limit,
        headers=request.headers, filter=request.filter, ordered=request.ordered,
        paused=request.paused, paused_since=now if request.paused else None,
        tls=request.tls.record() if request.tls is not None else None,  # the store seals it
        created=now, updated=now)


def _created(ctx: EventlogContext, endpoint: Endpoint, verify: bool) -> EndpointCreated:
    """Save a new endpoint (pending its URL verification with ``verify``); the answer."""
    saved = _start_verification(ctx, endpoint) if verify else ctx.endpoints.save(endpoint)
    return EndpointCreated.of(saved, ctx.endpoints.keyring)


def _start_verification(ctx: EventlogContext, endpoint: Endpoint) -> Endpoint:
    """Save ``endpoint`` pending a new challenge, then queue the challenge request (the
    fanout sends it and writes the outcome to the record); returns the record as written.

    The record goes first: a request lost to a crash between the two writes leaves a
    pending state that ``POST …/verify`` retries, never a challenge the record does not
    know (the fanout does not send a challenge its record does not wait for).
    """
    saved = ctx.endpoints.save(pending(endpoint, utcnow()))
    request = verification_request(saved, ctx.settings.api_version)
    ctx.queue.enqueue([(request, saved)], "verify", keep=0)
    return saved


def _check_verified(endpoint: Endpoint) -> None:
    """409 while ``endpoint``'s URL verification is pending or failed."""
    if endpoint.verification is not None and not endpoint.verified:
        raise Problem(409, f"endpoint {endpoint.id} is not verified "
                           f"({endpoint.verification.state}): it gets events once its "
                           "receiver echoed the challenge (POST …/verify sends a new one)")


def _created_with(ctx: EventlogContext, tenant: str, idempotency_key: str) -> Endpoint | None:
    """The endpoint first created with ``idempotency_key`` within the idempotency window."""
    since = utcnow() - timedelta(seconds=ctx.settings.idempotency_window)
    found = [e for e in ctx.endpoints.find_created_with(tenant, idempotency_key)
             if e.created > since]
    return min(found, key=lambda e: (e.created, e.id)) if found else None


@endpoints_router.get("", response_model=EndpointPage, summary="List endpoints")
def list_endpoints(
    ctx: ContextDep,
    tenant: ReadTenantDep,
    disabled: Annotated[bool | None, Query(
        description="Only disabled (true) or only enabled (false) endpoints.")] = None,
    url: Annotated[str | None, Query(
        description="Only endpoints whose URL contains this text (case-insensitive).",
        max_length=200)] = None,
    limit: LimitQuery = 100,
    cursor: CursorQuery = None,
) -> EndpointPage:
    """The tenant's endpoints, disabled ones included, by id (oldest first); page until
    ``has_more`` is false. The cursor alone continues the listing with its filters."""
    filters = EndpointFilters(disabled=disabled, url=url or None)
    position, binding = ctx.decode_cursor(cursor, "endpoints", tenant, filters.describe(),
                                          filters_given=filters != EndpointFilters())
    if position.filters is not None:
        filters = EndpointFilters.from_description(position.filters)
    endpoints, has_more = ctx.endpoints.page(tenant, filters, position.after, limit)
    following = position.past(endpoints[-1].id if endpoints else None)
    return EndpointPage(data=[EndpointOut.of(e, ctx.settings.retention_days) for e in endpoints],
                        has_more=has_more,
                        next_cursor=following.encode(binding, ctx.cursor_key))


@endpoints_router.get("/{endpoint_id}", response_model=EndpointOut, summary="One endpoint")
def get_endpoint(ctx: ContextDep, tenant: ReadTenantDep,
                 endpoint_id: Annotated[str, ENDPOINT_ID]) -> EndpointOut:
    """The endpoint, without its signing secrets."""
    return EndpointOut.of(_load(ctx, tenant, endpoint_id), ctx.settings.retention_days)


@endpoints_router.get("/{endpoint_id}/secret", response_model=EndpointSecrets,
                      summary="Signing secrets of an endpoint")
def get_secrets(ctx: ContextDep, tenant: ManageTenantDep,
                endpoint_id: Annotated[str, ENDPOINT_ID]) -> EndpointSecrets:
    """The secrets that sign deliveries now, newest first."""
    endpoint = _load(ctx, tenant, endpoint_id)
    return EndpointSecrets(secrets=endpoint.opened_secrets(ctx.endpoints.keyring))


@endpoints_router.patch("/{endpoint_id}", response_model=EndpointOut,
                        summary="Change an endpoint")
def update_endpoint(ctx: ContextDep, tenant: ManageTenantDep,
                    endpoint_id: Annotated[str, ENDPOINT_ID],
                    request: EndpointUpdate) -> EndpointOut:
    """Change the fields given; ``disabled: false`` re-enables a disabled endpoint; ``tls``
    replaces the TLS material as a whole (null removes it)."""
    endpoint = _load(ctx, tenant, endpoint_id, to_change=True)
    changes = request.model_dump(exclude_unset=True)
    if changes.get("url") is not None:
        _check_url(ctx, changes["url"])
    for name in ("url", "events", "description", "headers", "ordered", "paused"):
        if name in changes and changes[name] is None:
            raise Problem(422, f"{name}: may not be null")
    if "disabled" in changes:
        if changes["disabled"] is None:
            raise Problem(422, "disabled: may not be null")
        changes["disabled_reason"] = "disabled through the API" if changes["disabled"] else None
    if "headers" in changes:
        changes["headers"] = request.headers  # the models, not their dumps
    if "tls" in changes:  # null removes it; the store seals a new key
        changes["tls"] = request.tls.record() if request.tls is not None else None
    _check_tls_target(changes.get("url") or endpoint.url,
                      changes.get("tls", endpoint.tls) is not None)
    now = utcnow()
    if changes.get("paused") is not None and changes["paused"] != endpoint.paused:
        changes["paused_since"] = now if changes["paused"] else None
    updated = endpoint.model_copy(update={**changes, "updated": now})
    if endpoint.verification is not None and updated.url != endpoint.url:
        # What was verified is the old URL: the new one gets events once it echoes too.
        return EndpointOut.of(_start_verification(ctx, updated), ctx.settings.retention_days)
    return EndpointOut.of(ctx.endpoints.save(updated), ctx.settings.retention_days)


@endpoints_router.delete("/{endpoint_id}", status_code=204, response_class=Response,
                         summary="Delete an endpoint")
def delete_endpoint(ctx: ContextDep, tenant: ManageTenantDep,
                    endpoint_id: Annotated[str, ENDPOINT_ID]) -> Response:
    """Stop delivering to the endpoint and forget it."""
    _load(ctx, tenant, endpoint_id)
    ctx.endpoints.delete(endpoint_id)
    return Response(status_code=204)


@endpoints_router.post("/{endpoint_id}/rotate-secret", response_model=EndpointCreated,
                       summary="Rotate the signing secret")
def rotate_secret(ctx: ContextDep, tenant: ManageTenantDep,
                  endpoint_id: Annotated[str, ENDPOINT_ID]) -> EndpointCreated:
    """A new secret signs from now on; the previous ones keep signing alongside it
    until ``now + WEBHOOKS_SECRET_ROTATION_OVERLAP``, so receivers can switch over."""
    endpoint = _load(ctx, tenant, endpoint_id, to_change=True)
    now = utcnow()
    expires_at = now + timedelta(seconds=ctx.settings.secret_rotation_overlap)
    kept = []
    for old in endpoint.secrets:
        if not old.valid_at(now):
            continue  # already expired: drop it
        # An older secret already counting down keeps its earlier expiry.
        expiry = expires_at if old.expires is None else min(expires_at, old.expires)
        kept.append(EndpointSecret(secret=old.secret, expires=expiry))
    rotated = endpoint.model_copy(update={
        "secrets": [EndpointSecret(secret=generate_secret()), *kept],  # the store seals it
        "updated": now})
    return EndpointCreated.of(ctx.endpoints.save(rotated), ctx.endpoints.keyring)


@endpoints_router.post("/{endpoint_id}/verify", status_code=202, response_model=EndpointOut,
                       summary="Verify the endpoint's URL again")
def verify_endpoint(ctx: ContextDep, tenant: ManageTenantDep,
                    endpoint_id: Annotated[str, ENDPOINT_ID]) -> EndpointOut:
    """Send a new ``webhook.verification`` challenge to an endpoint whose verification is
    pending or failed (an older challenge no longer counts). The answer shows it pending;
    ``GET`` shows the outcome once the receiver answered: ``verified`` (events flow from
    then on), or ``failed`` with the error and the reason."""
    endpoint = _load(ctx, tenant, endpoint_id, to_change=True)
    if endpoint.verification is None:
        raise Problem(409, f"endpoint {endpoint_id} was created without verification "
                           "(verify: true); it gets events already")
    if endpoint.verification.state == "verified":
        raise Problem(409, f"endpoint {endpoint_id} is verified already")
    if endpoint.disabled:
        raise Problem(409, f"endpoint {endpoint_id} is disabled; re-enable it first")
    return EndpointOut.of(_start_verification(ctx, endpoint), ctx.settings.retention_days)


@endpoints_router.post("/{endpoint_id}/test", status_code=202, response_model=Queued,
                       summary="Send a test event")
def send_test(ctx: ContextDep, tenant: ManageTenantDep,
              endpoint_id: Annotated[str, ENDPOINT_ID]) -> Queued:
    """Queue a ``webhook.test`` event for this endpoint through the normal delivery path."""
    endpoint = _load(ctx, tenant, endpoint_id)
    _check_verified(endpoint)
    event = Envelope.create(type=TEST_EVENT_TYPE, tenant=tenant,
                            api_version=ctx.settings.api_version,
                            data={"object": {"endpoint_id": endpoint.id, "test": True}})
    return Queued.of(ctx.queue.enqueue([(event, endpoint)], "test", keep=MAX_LISTED_TASKS))


@endpoints_router.get("/{endpoint_id}/attempts", response_model=AttemptPage,
                      summary="Delivery attempts of an endpoint")
def list_attempts(
    ctx: ContextDep,
    tenant: ReadTenantDep,
    endpoint_id: Annotated[str, ENDPOINT_ID],
    status: Annotated[Literal["succeeded", "failed"] | None, Query()] = None,
    event_id: Annotated[str | None, Query(
        description="Only attempts to deliver this event (evt_…).", max_length=80)] = None,
    error: Annotated[str | None, Query(
        description="Only attempts that failed with this error class: timeout, connect, "
                    "network, redirect, http_status, refused_target, "
                    "endpoint_misconfigured, endpoint_missing, endpoint_disabled, "
                    "endpoint_unverified, challenge_not_echoed.",
        pattern=ERROR_CLASS_PATTERN)] = None,
    created_after: Annotated[datetime | None, Query(
        description="Only attempts made strictly after this instant (UTC if no zone).")
    ] = None,
    created_before: Annotated[datetime | None, Query(
        description="Only attempts made strictly before this instant.")] = None,
    limit: LimitQuery = 100,
    cursor: CursorQuery = None,
) -> Response:
    """Attempts in log order (newest last); resume with ``next_cursor``."""
    _load(ctx, tenant, endpoint_id)
    after, before = checked_range(created_after, created_before)
    filters = AttemptFilters(status=status, event_id=event_id, error=error,
                             created_after=after, created_before=before)
    position, binding = ctx.decode_cursor(
        cursor, f"attempts/{endpoint_id}", tenant, filters.describe(),
        filters_given=filters != AttemptFilters())
    if position.filters is not None:
        filters = AttemptFilters.from_description(position.filters)
    page = ctx.events.page_attempts(tenant, endpoint_id, filters, position, limit)
    return page_response(page, binding, ctx.cursor_key)


@endpoints_router.get("/{endpoint_id}/attempts/{attempt_id}", response_model=AttemptOut,
                      summary="One delivery attempt of an endpoint")
def get_attempt(ctx: ContextDep, tenant: ReadTenantDep,
                endpoint_id: Annotated[str, ENDPOINT_ID],
                attempt_id: Annotated[str, ATTEMPT_ID]) -> AttemptOut:
    """The attempt with the request's and the response's headers."""
    _load(ctx, tenant, endpoint_id)
    attempt = ctx.events.get_attempt(tenant, endpoint_id, attempt_id)
    if attempt is None:
        raise Problem(404, f"no attempt {attempt_id} of endpoint {endpoint_id}")
    return AttemptOut.model_validate(attempt)


@endpoints_router.post("/{endpoint_id}/recover", status_code=202, response_model=Queued,
                       summary="Deliver every matching event since a time again")
def recover(ctx: ContextDep, tenant: ManageTenantDep,
            endpoint_id: Annotated[str, ENDPOINT_ID],
            request: Annotated[RecoverRequest, Body()]) -> Queued:
    """Queue every event created at or after ``since`` (and before ``until``, if given)
    that the endpoint subscribes to, with their original ids."""
    endpoint = _load(ctx, tenant, endpoint_id)
    if endpoint.disabled:
        raise Problem(409, f"endpoint {endpoint_id} is disabled; re-enable it first")
    _check_verified(endpoint)
    if request.until is not None and request.until <= request.since:
        raise Problem(422, "until must be after since")
    filters = EventFilters(types=tuple(endpoint.events),
                           created_after=request.since - timedelta(microseconds=1),
                           created_before=request.until)
    events = (Envelope.from_json(raw) for raw in ctx.events.iter_events(tenant, filters))
    return Queued.of(ctx.queue.enqueue(((event, endpoint) for event in events), "recover",
                                       keep=MAX_LISTED_TASKS))
