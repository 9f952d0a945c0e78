"""Entry point: ``webhooks serve ingest``."""

from __future__ import annotations

import uvicorn
from fastapi import FastAPI

from services.ingest.app import create_app
from webhooks import garbage_collection
from webhooks.observability import access_log, logging_config
from webhooks.settings import Settings, get_settings


def app_from_environment() -> FastAPI:
    """The app of one worker process of a multi-worker server, configured like the CLI:
    from the ``WEBHOOKS_*`` environment the workers inherit."""
    app = create_app(get_settings())
    garbage_collection.tune()
    return app


def run(settings: Settings) -> None:
    """Serve the ingest API (and its Kafka intake) until interrupted.

    uvloop and httptools: the fastest event loop and HTTP parser uvicorn has. With
    ``ingest_workers`` > 1, uvicorn runs that many processes on one port, each a full
    replica (its own ledger view, Kafka clients and intake consumer), which spreads the
    per-request Python work over the cores; the workers read their settings from the
    environment, as ``settings`` was (see ``services.cli``).
    """
    options = {"host": settings.host, "port": settings.ingest_port, "loop": "uvloop",
               "http": "httptools", "log_level": settings.log_level.lower(),
               "log_config": logging_config(settings.log_level, settings.log_format),
               "access_log": access_log(settings.log_level)}
    if settings.ingest_workers > 1:
        uvicorn.run("services.ingest.main:app_from_environment", factory=True,
                    workers=settings.ingest_workers, **options)
    else:
        app = create_app(settings)
        garbage_collection.tune()
        uvicorn.run(app, **options)
