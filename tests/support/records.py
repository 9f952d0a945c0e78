"""Builders of the shared records (endpoints, envelopes) for tests of every service."""

from __future__ import annotations

from webhooks.endpoints import Endpoint, EndpointSecret, new_endpoint_id
from webhooks.envelope import Envelope, utcnow
from webhooks.signing import generate_secret


def endpoint(tenant: str, events: list[str], **fields: object) -> Endpoint:
    """An enabled endpoint of `tenant` for `events` on example.com, with a fresh secret."""
    now = utcnow()
    return Endpoint(id=new_endpoint_id(), tenant=tenant, url="https://example.com/hook",
                    events=events, secrets=[EndpointSecret(secret=generate_secret())],
                    created=now, updated=now, **fields)  # type: ignore[arg-type]


def event(type: str, tenant: str = "acme") -> Envelope:
    """An envelope of `type` for `tenant` with empty data."""
    return Envelope.create(type=type, tenant=tenant, data={"object": {}},
                           api_version="2026-11-01")
