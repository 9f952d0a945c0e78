"""Eventlog service (tenant-facing): ClickHouse sink and the event log / endpoints API.

``WEBHOOKS_EVENTLOG_ROLE`` chooses what this process runs: ``all`` (sink thread + API;
the only choice with embedded chDB, which one process owns), ``api`` or ``sink``
(separately scaled against a ClickHouse server).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from clickhouse_connect.driver.exceptions import ClickHouseError
from confluent_kafka import KafkaException
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from services.eventlog.clickhouse import (
    ClickHouseTarget,
    apply_migrations,
    clickhouse_reachable,
    create_clickhouse_client,
)
from services.eventlog.context import EventlogContext
from services.eventlog.dashboard import dashboard_router
from services.eventlog.dlq_api import dlq_router
from services.eventlog.endpoints_api import endpoints_router
from services.eventlog.events_api import events_router
from services.eventlog.metrics import eventlog_registry
from services.eventlog.sink import EventLogSink
from services.eventlog.stream_api import stream_router
from services.eventlog.tenants_api import tenants_router
from webhooks.acked_producer import AckedProducer
from webhooks.auth import ApiKeys
from webhooks.kafka import kafka_reachable
from webhooks.observability import health_router
from webhooks.problems import install_problem_handlers, problem_response
from webhooks.registry import Registry
from webhooks.secret_encryption import SecretsKeyError
from webhooks.settings import Settings
from webhooks.shutdown import GracefulShutdown
from webhooks.topics import Topics

log = logging.getLogger(__name__)


def create_app(settings: Settings) -> FastAPI:
    """Build the eventlog for ``settings``; applies ClickHouse migrations first.

    The sink (roles ``all`` and ``sink``) starts with the app's lifespan and stops,
    flushing and committing, when the app shuts down. The routes reach this app's
    context and API keys through ``app.state`` (see ``services.eventlog.deps``).
    """
    client = create_clickhouse_client(settings.clickhouse_url)
    apply_migrations(client, settings.retention_days)
    if settings.eventlog_role == "api" and ClickHouseTarget.parse(settings.clickhouse_url).embedded:
        log.warning("eventlog role 'api' with embedded chDB: the sink must run in this process")
    producer = AckedProducer(settings.kafka)
    registry = Registry(settings.kafka, Topics.from_settings(settings).registry, writer=producer)
    sink = None
    if settings.eventlog_role in ("all", "sink"):
        sink = EventLogSink(settings, create_clickhouse_client(settings.clickhouse_url,
                                                               create_database=False),
                            erased=registry.is_deleted)
    context = (EventlogContext.create(settings, client, producer, registry)
               if settings.eventlog_role in ("all", "api") else None)

    shutdown = GracefulShutdown(settings.shutdown_delay)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        shutdown.install()
        registry.start()
        if sink is not None:
            sink.start()
        try:
            yield
        finally:
            if sink is not None:
                sink.stop()
            registry.stop()
            if context is not None:
                context.endpoints.close()
            producer.close()

    app = FastAPI(title="webhooks eventlog", version="1", lifespan=lifespan,
                  description="Event log replay, endpoint management, delivery attempts "
                              "and redelivery for one tenant (from the API key).")
    app.state.sink = sink
    install_problem_handlers(app)
    _answer_backend_failures(app)
    checks = {"kafka": lambda: kafka_reachable(settings.kafka),
              "clickhouse": lambda: clickhouse_reachable(client)}
    if sink is not None:
        checks["sink"] = lambda: sink.alive
    checks["registry"] = lambda: registry.ready
    app.include_router(health_router(checks, eventlog_registry(settings, client), shutdown))
    if context is not None:
        app.state.context = context
        app.state.api_keys = ApiKeys(settings.api_keys, registry)
        app.include_router(tenants_router)
        app.include_router(stream_router)  # before events_router: /stream is no event id
        app.include_router(events_router)
        app.include_router(endpoints_router)
        app.include_router(dlq_router)
        app.include_router(dashboard_router)
    return app


def _answer_backend_failures(app: FastAPI) -> None:
    """Kafka or ClickHouse failing is a 503 problem (retry), not an opaque 500; a secret
    this server cannot decrypt is a 500 problem that says so."""

    @app.exception_handler(KafkaException)
    async def _kafka(request: Request, exc: KafkaException) -> JSONResponse:
        log.error("Kafka failed during %s %s: %s", request.method, request.url.path, exc)
        return problem_response(503, "Kafka is unavailable; retry the request",
                                headers={"Retry-After": "5"})

    @app.exception_handler(SecretsKeyError)
    async def _secrets_key(request: Request, exc: SecretsKeyError) -> JSONResponse:
        # The operator's message (key ids) goes to the log; the caller learns only that
        # the server cannot open the secret. Neither carries the secret.
        log.error("%s %s: %s", request.method, request.url.path, exc)
        return problem_response(500, "the endpoint's signing secret cannot be decrypted with "
                                     "this server's WEBHOOKS_SECRETS_KEY; ask the operator")

    @app.exception_handler(ClickHouseError)
    async def _clickhouse(request: Request, exc: ClickHouseError) -> JSONResponse:
        log.error("ClickHouse failed during %s %s: %s", request.method, request.url.path, exc)
        return problem_response(503, "the event log store is unavailable; retry the request",
                                headers={"Retry-After": "5"})

