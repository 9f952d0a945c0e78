"""Ingest service (producer-facing): validates events, envelopes them, appends to Kafka."""

from __future__ import annotations

from fastapi import FastAPI

from webhooks.kafka import kafka_reachable
from webhooks.observability import health_router
from webhooks.problems import install_problem_handlers
from webhooks.settings import Settings


def create_app(settings: Settings) -> FastAPI:
    """Build the ingest API for ``settings``."""
    app = FastAPI(title="webhooks ingest", version="1")
    install_problem_handlers(app)
    app.include_router(health_router({"kafka": lambda: kafka_reachable(settings)}))
    return app
