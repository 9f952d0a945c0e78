"""Ingest service (producer-facing): validates events, envelopes them, appends to Kafka."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from starlette.types import Receive, Scope, Send

from services.ingest.deps import authenticate_publisher
from services.ingest.metrics import IngestMetrics
from services.ingest.routes import create_event, events_router
from services.ingest.runtime import LEDGER_STARTUP_WAIT, IngestRuntime
from webhooks import tracing
from webhooks.auth import ApiKeys
from webhooks.kafka import kafka_reachable
from webhooks.observability import health_router
from webhooks.problems import (
    Problem,
    install_problem_handlers,
    problem_response,
    render_problem,
)
from webhooks.settings import Settings
from webhooks.shutdown import GracefulShutdown

log = logging.getLogger(__name__)


PUBLISH_PATH = "/v1/events"


class IngestApp(FastAPI):
    """The ingest API; ``POST /v1/events`` skips FastAPI's machinery.

    That route is called once per event by every producer, and FastAPI's middleware
    stack, routing and dependency solving cost about as much CPU per request as the
    handler itself (py-spy under ``hey``, 2026-12-05: 23 % of the process's samples, the
    handler 26 %). So the app hands that exact method and path straight to the route's
    own function, with its dependencies resolved the same way
    (:func:`publish_directly`); every other request goes through FastAPI. The route stays
    declared on the router, which is what the OpenAPI document shows.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == PUBLISH_PATH \
                and scope["method"] == "POST":
            scope["app"] = self
            await publish_directly(self, scope, receive, send)
            return
        await super().__call__(scope, receive, send)


async def publish_directly(app: FastAPI, scope: Scope, receive: Receive, send: Send) -> None:
    """``POST /v1/events`` without routing or dependency solving: the same dependencies
    and handler, problems answered the way the app's exception handler does."""
    request = Request(scope, receive)
    runtime: IngestRuntime = app.state.runtime
    try:
        response = await create_event(request, runtime,
                                      await authenticate_publisher(request, runtime))
    except Problem as problem:
        response = render_problem(problem)
    except Exception:
        log.exception("POST %s failed", PUBLISH_PATH)
        response = problem_response(500, "internal error; retry later")
    await response(scope, receive, send)


def create_app(settings: Settings, *, ledger_startup_wait: float = LEDGER_STARTUP_WAIT
               ) -> FastAPI:
    """Build the ingest API for ``settings``; its lifespan runs the ledger and Kafka intake.

    The routes reach this app's runtime and API keys through ``app.state`` (see
    ``services.ingest.deps``).
    """
    metrics = IngestMetrics()
    runtime = IngestRuntime(settings, metrics, ledger_startup_wait=ledger_startup_wait)
    shutdown = GracefulShutdown(settings.shutdown_delay)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        shutdown.install()  # in each worker process of a multi-worker server
        # Here, not at import: each worker process of a multi-worker server exports its own.
        traced = tracing.configure("ingest")
        await asyncio.to_thread(runtime.start)
        try:
            yield
        finally:
            await asyncio.to_thread(runtime.stop)
            if traced:
                tracing.shutdown()

    app = IngestApp(title="webhooks ingest", version="1", lifespan=lifespan)
    app.state.runtime = runtime
    app.state.api_keys = ApiKeys(settings.api_keys, runtime.registry)
    install_problem_handlers(app)
    app.include_router(health_router({
        "kafka": lambda: kafka_reachable(settings.kafka),
        "idempotency_ledger": runtime.ledger_ready,
        "registry": runtime.registry_ready,
        "kafka_intake": runtime.intake_running,
    }, registry=metrics.registry, shutdown=shutdown))
    app.include_router(events_router)
    return app
