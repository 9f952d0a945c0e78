"""Endpoint records as kept on the compacted endpoints topic (schema ``endpoint.v1``).

A record's signing secrets, the values of its secret custom headers and the private key
of its TLS client certificate are stored sealed
(:mod:`webhooks.secret_encryption`), or plain in records written before they were
encrypted; whoever needs the plain text (the fanout to send, the eventlog API to show a
signing secret) opens them with the keyring. Each sealed text is bound to its endpoint
and place (:func:`header_binding`): it does not open anywhere else.
"""

from __future__ import annotations

import re
from datetime import datetime
from functools import cached_property
from typing import Any, ClassVar, Literal, Self

from ulid import ULID

from webhooks.envelope import Envelope, Timestamp, utcnow
from webhooks.matching import matches_any
from webhooks.payload_filter import Predicate, compile_filter
from webhooks.record import JsonRecord
from webhooks.secret_encryption import SecretsKeyring, key_id_of

ENDPOINT_SCHEMA = "endpoint.v1"

MAX_CUSTOM_HEADERS = 20
# What stands for a secret header value wherever it is shown.
MASKED = "[masked]"
MAX_HEADER_VALUE = 1024
# An HTTP field name (RFC 9110 token).
HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}$")
# Headers a custom one may not set: they would change the meaning of the request, the
# signature's, or the connection's (hop-by-hop).
RESERVED_HEADERS = frozenset({
    "host", "content-length", "content-type", "content-encoding", "transfer-encoding",
    "connection", "keep-alive", "proxy-connection", "proxy-authorization",
    "proxy-authenticate", "te", "trailer", "upgrade", "expect", "user-agent"})


def header_binding(endpoint_id: str, name: str) -> str:
    """What a secret header value is sealed for: this endpoint's header of this name."""
    return f"{endpoint_id}/headers/{name.lower()}"


def tls_key_binding(endpoint_id: str) -> str:
    """What an endpoint's TLS client key is sealed for."""
    return f"{endpoint_id}/tls/key"


def new_endpoint_id() -> str:
    """A unique endpoint id: ``ep_`` and a ULID."""
    return f"ep_{ULID()}"


class EndpointSecret(JsonRecord):
    """A signing secret (sealed ``whenc_v1.…`` or plain ``whsec_…`` in a record; always
    plain in an API answer); ``expires`` is set on the old one when a secret is rotated."""

    secret: str
    expires: Timestamp | None = None

    def valid_at(self, moment: datetime) -> bool:
        """True while this secret signs: it has no expiry or expires after ``moment``."""
        return self.expires is None or self.expires > moment


class EndpointHeader(JsonRecord):
    """A custom header sent with every delivery; ``secret`` values are masked in attempt
    records and never shown by the API after they are set."""

    name: str
    value: str
    secret: bool = False


def check_custom_headers(headers: list[EndpointHeader]) -> list[EndpointHeader]:
    """``headers`` if every one may be sent; a ValueError naming the first that may not."""
    if len(headers) > MAX_CUSTOM_HEADERS:
        raise ValueError(f"at most {MAX_CUSTOM_HEADERS} custom headers")
    seen: set[str] = set()
    for header in headers:
        name = header.name.lower()
        if not HEADER_NAME.match(header.name):
            raise ValueError(f"header {header.name!r}: not a valid HTTP header name")
        if name in RESERVED_HEADERS or name.startswith("webhook-"):
            raise ValueError(f"header {header.name!r}: reserved (it would change the meaning "
                             "of the request or its signature)")
        if name in seen:
            raise ValueError(f"header {header.name!r}: given twice")
        seen.add(name)
        if len(header.value) > MAX_HEADER_VALUE or any(c in header.value for c in "\r\n\0"):
            raise ValueError(f"header {header.name!r}: the value must be at most "
                             f"{MAX_HEADER_VALUE} characters, without CR, LF or NUL")
    return headers


class EndpointTls(JsonRecord):
    """TLS material of an endpoint, PEM texts: a client certificate (chain, leaf first) and
    its private key for receivers that require mutual TLS, and a CA bundle that replaces
    the system's trusted CAs for a receiver with a private CA. The key is stored sealed
    (bound to :func:`tls_key_binding`) and never shown after it is set; the eventlog API
    checks the material where it enters (:mod:`webhooks.endpoint_tls`)."""

    client_cert: str | None = None
    client_key: str | None = None
    ca_bundle: str | None = None


class EndpointIdempotency(JsonRecord):
    """The ``Idempotency-Key`` an endpoint was created with, and a digest per field of that
    request's body, so that a retry is told which fields it changed."""

    key: str
    fields: dict[str, str]


VerificationState = Literal["pending", "verified", "failed"]


class EndpointVerification(JsonRecord):
    """Where the endpoint's URL verification stands (:mod:`webhooks.endpoint_verification`):
    ``pending`` until the fanout sent ``challenge`` and the receiver echoed it, then
    ``verified``, or ``failed`` with the error class and the reason. Only a verified
    endpoint (or one without verification) gets events."""

    state: VerificationState
    challenge: str
    """The current challenge; a challenge request carrying another one is stale."""
    requested_at: Timestamp
    checked_at: Timestamp | None = None
    error: str | None = None
    reason: str | None = None


class Endpoint(JsonRecord):
    """One subscriber URL of one tenant, with its filters and secrets (newest first)."""

    schema_name: ClassVar[str | None] = ENDPOINT_SCHEMA

    id: str
    tenant: str
    url: str
    events: list[str]
    secrets: list[EndpointSecret]
    description: str = ""
    rate_limit: int | None = None
    headers: list[EndpointHeader] = []
    filter: dict[str, Any] | None = None
    ordered: bool = False
    paused: bool = False
    paused_since: Timestamp | None = None
    tls: EndpointTls | None = None
    disabled: bool = False
    disabled_reason: str | None = None
    idempotency: EndpointIdempotency | None = None
    verification: EndpointVerification | None = None
    created: Timestamp
    updated: Timestamp

    @classmethod
    def from_json(cls, raw: bytes | str) -> Self:
        """Checked against ``endpoint.v1`` (raises ``SchemaError`` naming the fields): the
        compacted topic keeps records of every writer and version for good, and reading
        one is rare (a change, an API request), unlike the records of each delivery."""
        return cls.validated(raw)

    def signing_secrets(self, moment: datetime | None = None) -> list[str]:
        """Secrets to sign with now, as stored: the current one and any still in its
        overlap window."""
        moment = moment or utcnow()
        return [s.secret for s in self.secrets if s.valid_at(moment)]

    def model_copy(self, *, update: dict[str, Any] | None = None, deep: bool = False) -> Self:
        """A copy whose payload filter is compiled anew (``update`` may change it)."""
        copy = super().model_copy(update=update, deep=deep)
        copy.__dict__.pop("payload_filter", None)
        return copy

    @cached_property
    def payload_filter(self) -> Predicate | None:
        """The compiled payload filter (once per record version), or None."""
        return compile_filter(self.filter) if self.filter is not None else None

    def stored_secrets(self) -> list[tuple[str, str]]:
        """(binding, stored text) of every secret it holds: the signing secrets (bound to
        the endpoint id), the values of its secret headers and its TLS client key."""
        tls_key = self.tls.client_key if self.tls is not None else None
        return [*((self.id, s.secret) for s in self.secrets),
                *((header_binding(self.id, h.name), h.value) for h in self.headers if h.secret),
                *(((tls_key_binding(self.id), tls_key),) if tls_key is not None else ())]

    def secret_key_ids(self) -> set[str | None]:
        """The key ids its secrets are sealed with (None: a plain, unsealed one)."""
        return {key_id_of(stored) for _, stored in self.stored_secrets()}

    def sealed(self, keyring: SecretsKeyring) -> Self:
        """This record with every secret (signing secrets, secret header values, the TLS
        client key) sealed by the keyring's primary key: plain ones sealed, those of other
        keys opened and sealed again; raises
        :class:`~webhooks.secret_encryption.SecretsKeyError`. Itself when nothing changes."""
        if self.secret_key_ids() <= {keyring.primary}:
            return self
        secrets = [s.model_copy(update={"secret": keyring.reseal(self.id, s.secret)})
                   for s in self.secrets]
        headers = [h.model_copy(update={
            "value": keyring.reseal(header_binding(self.id, h.name), h.value)})
            if h.secret else h for h in self.headers]
        tls = self.tls
        if tls is not None and tls.client_key is not None:
            tls = tls.model_copy(update={
                "client_key": keyring.reseal(tls_key_binding(self.id), tls.client_key)})
        return self.model_copy(update={"secrets": secrets, "headers": headers, "tls": tls})

    def with_headers_opened(self, keyring: SecretsKeyring) -> Self:
        """This record with its secret header values opened (to compare a change with, or
        keep them in one); never to be written as is: the store seals them again."""
        headers = [h.model_copy(update={
            "value": keyring.open(header_binding(self.id, h.name), h.value)})
            if h.secret else h for h in self.headers]
        return self.model_copy(update={"headers": headers})

    def opened_secrets(self, keyring: SecretsKeyring) -> list[EndpointSecret]:
        """Its secrets as ``whsec_…`` texts (to show to the endpoint's owner)."""
        return [s.model_copy(update={"secret": keyring.open(self.id, s.secret)})
                for s in self.secrets]

    @property
    def verified(self) -> bool:
        """True unless a URL verification is pending or failed (created without one: True)."""
        return self.verification is None or self.verification.state == "verified"

    def wants(self, envelope: Envelope) -> bool:
        """True when this endpoint should receive ``envelope``: enabled, verified (if it
        asked to be), the tenant's, a subscribed type, and its payload filter (if any) holds."""
        if self.disabled or self.tenant != envelope.tenant or not self.verified \
                or not matches_any(self.events, envelope.type):
            return False
        predicate = self.payload_filter
        return predicate is None or predicate(envelope.filtered_document)
