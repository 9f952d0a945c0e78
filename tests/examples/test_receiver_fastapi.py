"""The README's FastAPI receiver: verifies with ``standardwebhooks``, refuses stale or
forged requests, and handles each ``webhook-id`` once."""

from __future__ import annotations

import json
import time

from fastapi.testclient import TestClient

from examples.receiver_fastapi import create_app
from webhooks.envelope import Envelope
from webhooks.signing import generate_secret, signature_header

SECRET = generate_secret()


def signed(envelope: Envelope, secret: str = SECRET, timestamp: int | None = None
           ) -> tuple[bytes, dict[str, str]]:
    """The body and headers the platform sends (webhooks/signing.py, as the fanout signs)."""
    body = envelope.to_json()
    timestamp = int(time.time()) if timestamp is None else timestamp
    return body, {"content-type": "application/json", "webhook-id": envelope.id,
                  "webhook-timestamp": str(timestamp),
                  "webhook-signature": signature_header([secret], envelope.id, timestamp, body)}


def event(type: str = "order.shipped") -> Envelope:
    return Envelope.create(type=type, tenant="acme", api_version="2026-11-01",
                           data={"object": {"id": "order_1"}})


def test_a_signed_webhook_is_handled_once() -> None:
    app = create_app(SECRET)
    client = TestClient(app)
    shipped = event()
    body, headers = signed(shipped)
    first = client.post("/hook", content=body, headers=headers)
    assert (first.status_code, first.json()) == (200, {"status": "handled"})
    # A retry (same webhook-id, new timestamp and signature) is acknowledged, not redone.
    body, headers = signed(shipped, timestamp=int(time.time()) + 1)
    again = client.post("/hook", content=body, headers=headers)
    assert (again.status_code, again.json()["status"]) == (200, "duplicate, already handled")
    assert [e["id"] for e in app.state.handled] == [shipped.id]
    assert app.state.handled[0] == json.loads(shipped.to_json())


def test_forged_tampered_and_stale_webhooks_are_refused() -> None:
    app = create_app(SECRET)
    client = TestClient(app)
    body, headers = signed(event(), secret=generate_secret())
    assert client.post("/hook", content=body, headers=headers).status_code == 400
    body, headers = signed(event())
    assert client.post("/hook", content=body + b" ", headers=headers).status_code == 400
    # Correctly signed but 10 minutes old: outside the library's 5-minute tolerance.
    body, headers = signed(event(), timestamp=int(time.time()) - 600)
    stale = client.post("/hook", content=body, headers=headers)
    assert stale.status_code == 400 and "too old" in stale.json()["error"]
    assert client.post("/hook", content=body).status_code == 400  # no headers at all
    assert app.state.handled == []
