"""Entry point: ``webhooks serve fanout``."""

from __future__ import annotations

import mode.loop
from faust.worker import Worker

from services.fanout.app import create_app
from webhooks.observability import logging_config
from webhooks.settings import Settings
from webhooks.topics import ensure_topics


def run(settings: Settings) -> None:
    """Create missing topics, then run the Faust worker in the foreground."""
    ensure_topics(settings)
    # uvloop: the worker's event loop runs every HTTP attempt and Kafka callback.
    mode.loop.use("uvloop")
    app = create_app(settings)
    Worker(app, loglevel=settings.log_level.lower(),
           logging_config=logging_config(settings.log_level, settings.log_format)
           ).execute_from_commandline()
