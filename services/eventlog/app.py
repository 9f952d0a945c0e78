"""Eventlog service (tenant-facing): ClickHouse sink and the event log / endpoints API."""

from __future__ import annotations

from fastapi import FastAPI

from webhooks.clickhouse import (
    apply_migrations,
    clickhouse_reachable,
    create_clickhouse_client,
)
from webhooks.kafka import kafka_reachable
from webhooks.observability import health_router
from webhooks.problems import install_problem_handlers
from webhooks.settings import Settings


def create_app(settings: Settings) -> FastAPI:
    """Build the eventlog API for ``settings``; applies ClickHouse migrations first."""
    client = create_clickhouse_client(settings.clickhouse_url)
    apply_migrations(client, settings.retention_days)
    app = FastAPI(title="webhooks eventlog", version="1")
    install_problem_handlers(app)
    app.include_router(health_router({
        "kafka": lambda: kafka_reachable(settings),
        "clickhouse": lambda: clickhouse_reachable(client),
    }))
    return app
