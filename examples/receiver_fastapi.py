"""A complete webhook receiver: FastAPI, verified with the ``standardwebhooks`` library.

Run it (the secret is the endpoint's ``whsec_…``, or the session secret that
``webhooks listen`` prints)::

    pip install fastapi uvicorn standardwebhooks
    WEBHOOK_SECRET=whsec_… uvicorn --factory examples.receiver_fastapi:from_environment --port 3000

What it does, in order, for each ``POST /hook``:

1. verifies the signature over the *raw* body with ``standardwebhooks`` (never re-encode
   the JSON before verifying). The library also refuses a ``webhook-timestamp`` more
   than 5 minutes away from the receiver's clock, which stops replays of old captured
   requests; keep the clock synced (NTP). A bad signature or timestamp answers 400.
2. handles each ``webhook-id`` once. Deliveries are at least once: a retry, a
   redelivery, a recovery or a replay from the DLQ sends the same event again with the
   same ``webhook-id``. A repeat answers 200 (so it is not retried) and does nothing.
   Here the processed ids live in memory; a real app records them in its database in
   the same transaction as the work (a unique key on the id), so a crash between the
   two cannot lose or repeat an effect.
3. answers 2xx quickly; slow work belongs in a queue (the platform times out after
   15 s by default and retries).
"""

from __future__ import annotations

import os
import threading
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from standardwebhooks.webhooks import Webhook, WebhookVerificationError


class ProcessedIds:
    """The ``webhook-id`` values already handled (stand-in for a unique DB column)."""

    def __init__(self) -> None:
        self._ids: set[str] = set()
        self._lock = threading.Lock()

    def claim(self, webhook_id: str) -> bool:
        """True the first time ``webhook_id`` is seen, False for every repeat."""
        with self._lock:
            if webhook_id in self._ids:
                return False
            self._ids.add(webhook_id)
            return True

    def release(self, webhook_id: str) -> None:
        """Forget a claim whose handling failed, so that the retry is handled."""
        with self._lock:
            self._ids.discard(webhook_id)


def handle_event(event: dict[str, Any]) -> None:
    """Your business logic; ``event`` is the verified envelope (id, type, created, data)."""
    print(f"{event['type']} {event['id']}: {event['data']}")


def create_app(secret: str) -> FastAPI:
    """The receiver for one endpoint's signing secret (``whsec_…``)."""
    webhook = Webhook(secret)
    processed = ProcessedIds()
    app = FastAPI(title="webhook receiver")
    app.state.handled = []  # verified events, in the order handled (for a demo or test)

    @app.post("/hook")
    async def receive(request: Request) -> JSONResponse:
        body = await request.body()  # the exact bytes that were signed
        try:
            event = webhook.verify(body, dict(request.headers))  # signature and timestamp
        except WebhookVerificationError as exc:
            return JSONResponse({"error": f"verification failed: {exc}"}, status_code=400)
        webhook_id = request.headers["webhook-id"]
        if not processed.claim(webhook_id):
            return JSONResponse({"status": "duplicate, already handled"})
        try:
            handle_event(event)
        except Exception:
            processed.release(webhook_id)  # answered 500: the platform retries
            raise
        app.state.handled.append(event)
        return JSONResponse({"status": "handled"})

    return app


def from_environment() -> FastAPI:
    """``uvicorn --factory``: the secret from ``WEBHOOK_SECRET``."""
    return create_app(os.environ["WEBHOOK_SECRET"])
