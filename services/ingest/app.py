"""Ingest service (producer-facing): validates events, envelopes them, appends to Kafka."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from services.ingest.metrics import IngestMetrics
from services.ingest.routes import events_router
from services.ingest.runtime import LEDGER_STARTUP_WAIT, IngestRuntime
from webhooks import tracing
from webhooks.auth import ApiKeys
from webhooks.kafka import kafka_reachable
from webhooks.observability import health_router
from webhooks.problems import install_problem_handlers
from webhooks.settings import Settings
from webhooks.shutdown import GracefulShutdown


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

    app = FastAPI(title="webhooks ingest", version="1", lifespan=lifespan)
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
