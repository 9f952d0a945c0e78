"""Endpoint records as kept on the compacted endpoints topic (schema ``endpoint.v1``)."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Self

from ulid import ULID

from webhooks.envelope import Envelope, Timestamp, utcnow
from webhooks.matching import matches_any
from webhooks.record import JsonRecord

ENDPOINT_SCHEMA = "endpoint.v1"


def new_endpoint_id() -> str:
    """A unique endpoint id: ``ep_`` and a ULID."""
    return f"ep_{ULID()}"


class EndpointSecret(JsonRecord):
    """A signing secret; ``expires`` is set on the old one when a secret is rotated."""

    secret: str
    expires: Timestamp | None = None

    def valid_at(self, moment: datetime) -> bool:
        """True while this secret signs: it has no expiry or expires after ``moment``."""
        return self.expires is None or self.expires > moment


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
    disabled: bool = False
    disabled_reason: str | None = None
    created: Timestamp
    updated: Timestamp

    @classmethod
    def from_json(cls, raw: bytes | str) -> Self:
        """Checked against ``endpoint.v1`` (raises ``SchemaError`` naming the fields): the
        compacted topic keeps records of every writer and version for good, and reading
        one is rare (a change, an API request), unlike the records of each delivery."""
        return cls.validated(raw)

    def signing_secrets(self, moment: datetime | None = None) -> list[str]:
        """Secrets to sign with now: the current one and any still in its overlap window."""
        moment = moment or utcnow()
        return [s.secret for s in self.secrets if s.valid_at(moment)]

    def wants(self, envelope: Envelope) -> bool:
        """True when this endpoint should receive ``envelope``."""
        return (
            not self.disabled
            and self.tenant == envelope.tenant
            and matches_any(self.events, envelope.type)
        )
