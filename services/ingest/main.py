"""Entry point: ``webhooks serve ingest``."""

from __future__ import annotations

import uvicorn

from services.ingest.app import create_app
from webhooks.settings import Settings


def run(settings: Settings) -> None:
    """Serve the ingest API (and its Kafka intake) until interrupted."""
    uvicorn.run(create_app(settings), host=settings.host, port=settings.ingest_port,
                log_level=settings.log_level.lower())
