"""Request and response bodies of the eventlog API (what /openapi.json publishes)."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from services.eventlog.redelivery import QueuedTasks
from webhooks.delivery import AttemptSummary
from webhooks.endpoint_tls import (
    MAX_CA_PEM,
    MAX_CERT_PEM,
    MAX_KEY_PEM,
    TlsMaterialError,
    check_tls,
)
from webhooks.endpoints import (
    MASKED,
    Endpoint,
    EndpointHeader,
    EndpointSecret,
    EndpointTls,
    check_custom_headers,
)
from webhooks.envelope import Envelope, utcnow
from webhooks.matching import FILTER_PATTERN, is_valid_filter
from webhooks.payload_filter import FilterError, compile_filter
from webhooks.secret_encryption import SecretsKeyring
from webhooks.signing import secret_key

MAX_LISTED_TASKS = 1000
ENDPOINT_ID_PATTERN = r"^ep_[0-9A-Za-z]{1,64}$"

# Checked by _check_filters (for a clearer message than a regex mismatch); the pattern is
# published so that clients and API fuzzers know the shape.
EventFilter = Annotated[str, WithJsonSchema({
    "type": "string", "pattern": FILTER_PATTERN, "examples": ["*", "order.*", "order.shipped"]})]


def _check_filters(patterns: list[str] | None) -> list[str] | None:
    if patterns is not None:
        bad = [p for p in patterns if not is_valid_filter(p)]
        if bad:
            raise ValueError(f"invalid event type filters {bad}: use '*', 'order.*' or "
                             "'order.shipped'")
    return patterns


def _check_headers(headers: list[EndpointHeader] | None) -> list[EndpointHeader] | None:
    return None if headers is None else check_custom_headers(headers)


def _check_payload_filter(document: dict[str, Any] | None) -> dict[str, Any] | None:
    if document is not None:
        try:
            compile_filter(document)
        except FilterError as exc:
            raise ValueError(str(exc)) from exc
    return document


HEADERS_DESCRIPTION = ("Custom headers sent with every delivery (at most 20); `secret: true` "
                       "values are masked in attempt records and in answers. Names that "
                       "would change the request's meaning are refused.")
FILTER_DESCRIPTION = ("Payload filter over the event's JSON, e.g. {\"data.object.status\": "
                      "\"shipped\", \"data.object.amount\": {\"$gte\": 1000}}; operators "
                      "$eq $neq $gt $gte $lt $lte $in $nin $exist $regex (RE2), $and, $or.")


ORDERED_DESCRIPTION = ("Deliver the tenant's events in the order they were appended, one at "
                       "a time; a failing delivery holds the later ones until it succeeds "
                       "or is dead-lettered.")
PAUSED_DESCRIPTION = ("Send nothing while paused, drop nothing: on resume everything held "
                      "goes out (in order for an ordered endpoint).")
VERIFY_DESCRIPTION = ("Verify the URL first: a webhook.verification request carrying "
                      "data.challenge is sent to it, and the endpoint gets events only once "
                      "the receiver answered 2xx echoing it ({\"challenge\": \"…\"}). "
                      "Events published before that are not delivered to it.")


def _check_secret(secret: str | None) -> str | None:
    if secret is not None:
        try:
            secret_key(secret)
        except ValueError as exc:
            raise ValueError("secret must be whsec_ followed by the base64 of 24-64 bytes"
                             ) from exc
    return secret


TLS_DESCRIPTION = ("TLS material for an https receiver, PEM: a client certificate and its "
                   "key (mutual TLS), and/or a CA bundle that replaces the system's CAs for "
                   "a receiver with a private CA. The key is stored encrypted and never "
                   "shown again.")


class EndpointTlsIn(BaseModel):
    """An endpoint's TLS material as given: checked (the certificate and key parse and
    belong together, OpenSSL accepts them), never quoted back in an error."""

    model_config = ConfigDict(extra="forbid")

    client_cert: str | None = Field(
        default=None, max_length=MAX_CERT_PEM,
        description="PEM client certificate, or chain with the leaf first.")
    client_key: str | None = Field(
        default=None, max_length=MAX_KEY_PEM,
        description="PEM private key of client_cert, unencrypted (it is stored encrypted); "
                    "write-only: answers show [masked].")
    ca_bundle: str | None = Field(
        default=None, max_length=MAX_CA_PEM,
        description="PEM certificates the receiver's certificate must chain to (instead of "
                    "the system's CAs).")

    @field_validator("client_cert", "client_key", "ca_bundle")
    @classmethod
    def _trimmed(cls, pem: str | None) -> str | None:
        return None if pem is None else pem.strip() + "\n"

    @model_validator(mode="after")
    def _usable(self) -> Self:
        try:
            check_tls(self.client_cert, self.client_key, self.ca_bundle)
        except TlsMaterialError as exc:
            raise ValueError(str(exc) if exc.field != "tls" else exc.reason) from None
        return self

    def record(self) -> EndpointTls:
        """As the endpoint record keeps it (the key still plain: the store seals it)."""
        return EndpointTls(client_cert=self.client_cert, client_key=self.client_key,
                           ca_bundle=self.ca_bundle)


class EndpointTlsOut(BaseModel):
    """An endpoint's TLS material as shown: the key masked."""

    client_cert: str | None = None
    client_key: str | None = Field(default=None, description="[masked] when a key is set.")
    ca_bundle: str | None = None


class EventPage(BaseModel):
    """A page of envelopes, oldest Kafka position first (newest last)."""

    data: list[Envelope]
    has_more: bool = Field(description="More rows are visible right now after this page.")
    next_cursor: str = Field(description="Resume after this page; always present, so a client "
                                         "that reached the end can poll for new events with it.")


class DeliveryStatus(BaseModel):
    """Where delivering one event to one endpoint stands."""

    endpoint_id: str
    attempts: int
    delivered: bool
    last_status: str
    last_response_status: int | None = None
    last_error: str | None = None
    last_outcome: str | None = None
    next_attempt_at: str | None = None
    last_attempt_at: str
    last_attempt_id: str | None = Field(
        default=None, description="The latest attempt, with its headers at "
                                  "/v1/endpoints/{endpoint_id}/attempts/{last_attempt_id}.")


class EventDetail(Envelope):
    """An envelope plus, per endpoint, its delivery status from the attempt log."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    deliveries: list[DeliveryStatus]


class AttemptOut(BaseModel):
    """One delivery attempt (schema ``attempt.v1``)."""

    id: str
    task_id: str
    event_id: str
    event_type: str
    attempt: int
    trigger: str
    url: str
    status: str
    response_status: int | None = None
    response_body: str | None = None
    error: str | None = None
    latency_ms: float
    timestamp: str
    next_attempt_at: str | None = None
    outcome: str | None = None
    request_headers: list[tuple[str, str]] | None = Field(
        default=None, description="[name, value] pairs as sent, webhook-signature included; "
                                  "values of custom headers marked secret read [masked]. "
                                  "null if nothing was sent, and for attempts made before "
                                  "headers were recorded.")
    response_headers: list[tuple[str, str]] | None = Field(
        default=None, description="[name, value] pairs as received, the first 4 KiB; null "
                                  "without a response.")
    response_headers_truncated: bool = Field(
        default=False, description="The response's headers went past 4 KiB: the last pair "
                                   "is cut, later ones left out.")


class AttemptPage(BaseModel):
    """A page of an endpoint's attempts, oldest first."""

    data: list[AttemptOut]
    has_more: bool
    next_cursor: str


class EndpointCreate(BaseModel):
    """``POST /v1/endpoints``."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=1, max_length=2048)
    events: list[EventFilter] = Field(min_length=1, max_length=100)
    description: str = Field(default="", max_length=512)
    secret: str | None = Field(default=None, description="whsec_…; generated when omitted.")
    rate_limit: int | None = Field(default=None, ge=1, description="Deliveries per second.")
    verify: bool = Field(default=False, description=VERIFY_DESCRIPTION)
    headers: list[EndpointHeader] = Field(default_factory=list, max_length=20,
                                          description=HEADERS_DESCRIPTION)
    filter: dict[str, Any] | None = Field(default=None, description=FILTER_DESCRIPTION)
    ordered: bool = Field(default=False, description=ORDERED_DESCRIPTION)
    paused: bool = Field(default=False, description=PAUSED_DESCRIPTION)
    tls: EndpointTlsIn | None = Field(default=None, description=TLS_DESCRIPTION)

    _filters = field_validator("events")(_check_filters)
    _secret = field_validator("secret")(_check_secret)
    _headers = field_validator("headers")(_check_headers)
    _payload_filter = field_validator("filter")(_check_payload_filter)

    def digests(self, key: bytes) -> dict[str, str]:
        """Per field, a digest of its value (defaults filled in), to tell a retry with an
        ``Idempotency-Key`` from a different request. Keyed (HMAC-SHA256 with ``key``, the
        eventlog's MAC key): the digests are kept on the record, and a plain hash of a
        secret header value, which may be short, could be guessed back from it."""
        return {name: hmac.new(key, json.dumps(value, sort_keys=True, separators=(",", ":"))
                               .encode(), hashlib.sha256).hexdigest()[:32]
                for name, value in self.model_dump(mode="json").items()}


class EndpointUpdate(BaseModel):
    """``PATCH /v1/endpoints/{id}``: only the fields given change."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(default=None, min_length=1, max_length=2048)
    events: list[EventFilter] | None = Field(default=None, min_length=1, max_length=100)
    description: str | None = Field(default=None, max_length=512)
    rate_limit: int | None = Field(default=None, ge=1)
    headers: list[EndpointHeader] | None = Field(
        default=None, max_length=20, description="Replaces every custom header (secret "
                                                 "values must be given again).")
    filter: dict[str, Any] | None = Field(default=None, description="null removes the filter.")
    ordered: bool | None = Field(default=None, description=ORDERED_DESCRIPTION)
    paused: bool | None = Field(default=None, description=PAUSED_DESCRIPTION)
    tls: EndpointTlsIn | None = Field(
        default=None, description=TLS_DESCRIPTION + " Replaces the TLS material as a whole "
                                                    "(the key must be given again); null "
                                                    "removes it.")
    disabled: bool | None = Field(default=None, description="false re-enables an endpoint.")

    _filters = field_validator("events")(_check_filters)
    _headers = field_validator("headers")(_check_headers)
    _payload_filter = field_validator("filter")(_check_payload_filter)


class VerificationOut(BaseModel):
    """Where an endpoint's URL verification stands (the challenge itself is not shown)."""

    state: Literal["pending", "verified", "failed"] = Field(
        description="pending: the challenge is on its way or unanswered (no events are "
                    "delivered); verified: the receiver echoed it; failed: it did not, see "
                    "error and reason (POST …/verify sends a new challenge).")
    requested_at: str
    checked_at: str | None = Field(default=None, description="When the answer was judged.")
    error: str | None = Field(default=None, description="Error class of a failed check: "
                              "challenge_not_echoed, http_status, timeout, connect, "
                              "refused_target, …")
    reason: str | None = None


class EndpointOut(BaseModel):
    """An endpoint as the API shows it (secrets only through ``/secret``)."""

    id: str
    url: str
    events: list[str]
    description: str
    rate_limit: int | None
    headers: list[EndpointHeader]
    filter: dict[str, Any] | None
    ordered: bool
    paused: bool
    paused_since: str | None
    tls: EndpointTlsOut | None = None
    disabled: bool
    disabled_reason: str | None
    verification: VerificationOut | None = Field(
        default=None, description="null unless created with verify: true.")
    created: str
    updated: str
    warnings: list[str] = Field(default_factory=list, description="What needs attention, "
                                "e.g. held tasks of a long-paused endpoint near retention.")

    @classmethod
    def of(cls, endpoint: Endpoint, retention_days: int | None = None) -> EndpointOut:
        """The endpoint as shown; with ``retention_days``, warnings about held tasks."""
        document = endpoint.model_dump(exclude={"tenant", "secrets"})
        document["headers"] = [{**h, "value": MASKED} if h["secret"] else h
                               for h in document["headers"]]
        if document["tls"] is not None and document["tls"]["client_key"] is not None:
            document["tls"] = {**document["tls"], "client_key": MASKED}
        if retention_days is not None:
            document["warnings"] = pause_warnings(endpoint, retention_days, utcnow())
        return cls.model_validate(document)


def pause_warnings(endpoint: Endpoint, retention_days: int, now: datetime) -> list[str]:
    """A warning when a paused ordered endpoint's oldest held tasks near the ordered
    topic's retention (an unordered one's are parked again every tier delay: they never
    expire). Warns from two days before."""
    if not (endpoint.paused and endpoint.ordered and endpoint.paused_since is not None):
        return []
    expiry = endpoint.paused_since + timedelta(days=retention_days)
    if now < expiry - timedelta(days=2):
        return []
    return [f"paused since {endpoint.paused_since.isoformat()}: tasks held for this ordered "
            f"endpoint are kept on the ordered topic for {retention_days} days; the oldest "
            f"are deleted from {expiry.isoformat()} on: resume it before then"]


class EndpointCreated(EndpointOut):
    """A new endpoint (or one whose secret was just rotated) with its current secret."""

    secret: str

    @classmethod
    def of(cls, endpoint: Endpoint, keyring: SecretsKeyring) -> EndpointCreated:
        """The record's current secret opened with ``keyring`` (the record holds it sealed)."""
        return cls.model_validate({**EndpointOut.of(endpoint).model_dump(),
                                   "secret": keyring.open(endpoint.id, endpoint.secrets[0].secret)})


class EndpointPage(BaseModel):
    """A page of endpoints, by id (oldest first)."""

    data: list[EndpointOut]
    has_more: bool = Field(description="More endpoints match after this page.")
    next_cursor: str = Field(description="Resume after this page (it carries the filters).")


class EndpointSecrets(BaseModel):
    """Signing secrets, newest first; an old one stays valid until its ``expires``."""

    secrets: list[EndpointSecret]


class RedeliverRequest(BaseModel):
    """``POST /v1/events/{id}/redeliver``: every matching endpoint, or just one."""

    model_config = ConfigDict(extra="forbid")

    endpoint_id: str | None = None


class RecoverRequest(BaseModel):
    """``POST /v1/endpoints/{id}/recover``: every matching event created since ``since``."""

    model_config = ConfigDict(extra="forbid")

    since: datetime
    until: datetime | None = None

    @field_validator("since", "until")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("timestamps need a time zone, e.g. 2026-11-22T10:00:00Z")
        return value


class QueuedTask(BaseModel):
    task_id: str
    endpoint_id: str
    event_id: str


class Queued(BaseModel):
    """Delivery tasks acknowledged by Kafka; the fanout delivers them asynchronously."""

    queued: int = Field(description="How many tasks were queued.")
    tasks: list[QueuedTask] = Field(description=f"The first {MAX_LISTED_TASKS} tasks.")

    @classmethod
    def of(cls, queued: QueuedTasks) -> Queued:
        """The answer for ``queued``, enqueued with ``keep=MAX_LISTED_TASKS``."""
        return cls(queued=queued.count, tasks=[
            QueuedTask(task_id=t.task_id, endpoint_id=t.endpoint_id, event_id=t.event.id)
            for t in queued.first])


class DeadTask(BaseModel):
    """A delivery task the fanout gave up on (the DLQ), with its attempt history."""

    id: str = Field(description="The task id (dlv_…).")
    endpoint_id: str
    event_id: str
    event_type: str
    event: Envelope
    trigger: str = Field(description="What queued the task that died (event, redeliver, "
                                     "recover, test, replay).")
    attempts: int = Field(description="How many attempts were made.")
    history: list[AttemptSummary] = Field(description="Every attempt, oldest first.")
    reason: str = Field(description="Why delivery stopped (retries exhausted, endpoint "
                                    "disabled, …).")
    last_error: str | None = Field(default=None, description="Error class of the last attempt.")
    last_response_status: int | None = None
    dead_lettered_at: str = Field(description="When the task went to the DLQ (UTC).")


class DeadTaskPage(BaseModel):
    """A page of dead tasks, oldest DLQ position first."""

    data: list[DeadTask]
    has_more: bool
    next_cursor: str


class DlqReplayRequest(BaseModel):
    """``POST /v1/dlq/replay``: either ``ids``, or filters like ``GET /v1/dlq``'s."""

    model_config = ConfigDict(extra="forbid")

    ids: list[Annotated[str, Field(max_length=80)]] | None = Field(
        default=None, min_length=1, max_length=MAX_LISTED_TASKS,
        description="Dead task ids (dlv_…), 1-1000; not together with filters.")
    endpoint_id: str | None = Field(default=None, pattern=ENDPOINT_ID_PATTERN)
    type: EventFilter | None = Field(
        default=None, description="Exact event type or prefix wildcard (order.*).")
    created_after: datetime | None = Field(
        default=None, description="Dead-lettered strictly after this instant (UTC if no zone).")
    created_before: datetime | None = Field(
        default=None, description="Dead-lettered strictly before this instant.")

    @field_validator("type")
    @classmethod
    def _type(cls, value: str | None) -> str | None:
        if value is not None and not is_valid_filter(value):
            raise ValueError(f"{value!r} is not an event type or a prefix like order.*")
        return value


class SkippedEndpoint(BaseModel):
    """An endpoint whose dead tasks a replay left alone, and why."""

    endpoint_id: str
    reason: Literal["deleted", "disabled"]


class Replayed(Queued):
    """Dead tasks queued again (new task ids, same events), and those left alone."""

    skipped: int = Field(description="Dead tasks not replayed: their endpoint was deleted "
                                     "or is disabled.")
    skipped_endpoints: list[SkippedEndpoint] = Field(
        description="The endpoints those tasks were for, and why.")
