"""Entry point: ``webhooks serve fanout``."""

from __future__ import annotations

import logging

from faust.worker import Worker

from services.fanout.app import create_app
from webhooks.settings import Settings
from webhooks.topics import ensure_topics


def run(settings: Settings) -> None:
    """Create missing topics, then run the Faust worker in the foreground."""
    ensure_topics(settings)
    # httpx logs every request at INFO; attempts are recorded on the attempts topic instead.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    app = create_app(settings)
    Worker(app, loglevel=settings.log_level.lower()).execute_from_commandline()
