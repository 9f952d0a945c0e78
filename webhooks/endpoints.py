"""Endpoint records as kept on the compacted endpoints topic (schema ``endpoint.v1``)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict
from ulid import ULID

from webhooks.envelope import Envelope, parse_timestamp, utcnow
from webhooks.json_schema import validate
from webhooks.matching import matches_any

ENDPOINT_SCHEMA = "endpoint.v1"


def new_endpoint_id() -> str:
    return f"ep_{ULID()}"


class EndpointSecret(BaseModel):
    """A signing secret; ``expires`` is set on the old one when a secret is rotated."""

    model_config = ConfigDict(extra="forbid")

    secret: str
    expires: str | None = None

    def valid_at(self, moment: datetime) -> bool:
        return self.expires is None or parse_timestamp(self.expires) > moment


class Endpoint(BaseModel):
    """One subscriber URL of one tenant, with its filters and secrets (newest first)."""

    model_config = ConfigDict(extra="forbid")

    id: str
    tenant: str
    url: str
    events: list[str]
    secrets: list[EndpointSecret]
    description: str = ""
    rate_limit: int | None = None
    disabled: bool = False
    disabled_reason: str | None = None
    created: str
    updated: str

    @classmethod
    def from_dict(cls, document: dict[str, Any]) -> Endpoint:
        validate(ENDPOINT_SCHEMA, document)
        return cls.model_validate(document)

    @classmethod
    def from_json(cls, raw: bytes | str) -> Endpoint:
        return cls.from_dict(json.loads(raw))

    def to_json(self) -> bytes:
        return json.dumps(self.model_dump(), separators=(",", ":")).encode()

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
