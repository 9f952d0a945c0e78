"""Entry point: ``webhooks serve eventlog``."""

from __future__ import annotations

import uvicorn

from services.eventlog.app import create_app
from webhooks.settings import Settings


def run(settings: Settings) -> None:
    uvicorn.run(create_app(settings), host=settings.host, port=settings.eventlog_port,
                log_level=settings.log_level.lower())
