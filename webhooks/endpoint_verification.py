"""URL verification of an endpoint: the challenge request, and what counts as its echo.

An endpoint created with ``verify: true`` starts ``pending`` and gets no events. The
eventlog writes its record with a fresh random challenge, then queues one delivery task
(trigger ``verify``) whose event is a ``webhook.verification`` carrying that challenge.
The fanout sends it like every webhook (signed, through its SSRF guard and connection
pool), once, and settles the verification from the answer: ``verified`` when the
receiver answered 2xx echoing the challenge, else ``failed`` with the reason; it writes
the settled state back to the endpoints topic. ``POST /v1/endpoints/{id}/verify`` starts
over with a new challenge; a request carrying an older challenge is stale and not sent.

The request body is an ordinary envelope::

    {"id": "evt_…", "type": "webhook.verification", "api_version": "…", "created": "…",
     "tenant": "acme", "data": {"challenge": "…", "object": {"id": "ep_…", "url": "…"}}}

and the receiver answers 2xx with ``{"challenge": "…"}`` (JSON), or the challenge alone
as the body.
"""

from __future__ import annotations

import json
import secrets
from datetime import datetime

from webhooks.endpoints import Endpoint, EndpointVerification
from webhooks.envelope import Envelope

VERIFICATION_EVENT = "webhook.verification"
CHALLENGE_BYTES = 24  # 32 URL-safe characters: unguessable, and short enough to echo
MAX_REASON = 1000


def new_challenge() -> str:
    """A fresh random challenge."""
    return secrets.token_urlsafe(CHALLENGE_BYTES)


def pending(endpoint: Endpoint, now: datetime) -> Endpoint:
    """``endpoint`` awaiting the echo of a new challenge (it gets no events meanwhile)."""
    return endpoint.model_copy(update={"updated": now, "verification": EndpointVerification(
        state="pending", challenge=new_challenge(), requested_at=now)})


def verification_request(endpoint: Endpoint, api_version: str) -> Envelope:
    """The ``webhook.verification`` event carrying ``endpoint``'s pending challenge."""
    if endpoint.verification is None:
        raise ValueError(f"endpoint {endpoint.id} has no verification to request")
    return Envelope.create(type=VERIFICATION_EVENT, tenant=endpoint.tenant,
                           api_version=api_version,
                           data={"challenge": endpoint.verification.challenge,
                                 "object": {"id": endpoint.id, "url": endpoint.url}})


def challenge_of(event: Envelope) -> str | None:
    """The challenge a ``webhook.verification`` event carries (None if it carries none)."""
    challenge = event.data.get("challenge")
    return challenge if event.type == VERIFICATION_EVENT and isinstance(challenge, str) \
        else None


def echoes(body: str | None, challenge: str) -> bool:
    """True when a receiver's answer ``body`` echoes ``challenge``: JSON
    ``{"challenge": …}``, or the challenge alone (surrounding whitespace ignored)."""
    text = (body or "").strip()
    if text == challenge:
        return True
    try:
        document = json.loads(text)
    except ValueError:
        return False
    return isinstance(document, dict) and document.get("challenge") == challenge


def settled(verification: EndpointVerification, now: datetime, error: str | None = None,
            reason: str | None = None) -> EndpointVerification:
    """``verification`` decided: ``verified`` without an ``error``, else ``failed`` with
    the error class and the reason (cut to :data:`MAX_REASON` characters)."""
    return verification.model_copy(update={
        "state": "failed" if error else "verified", "checked_at": now, "error": error,
        "reason": reason[:MAX_REASON] if reason else None})
