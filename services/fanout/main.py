"""Entry point: ``webhooks serve fanout``."""

from __future__ import annotations

import mode.loop
from faust.worker import Worker

from services.fanout.app import create_app
from webhooks import tracing
from webhooks.endpoint_secrets import check_secrets_key
from webhooks.observability import logging_config
from webhooks.settings import Settings
from webhooks.topics import ensure_topics


def run(settings: Settings) -> None:
    """Create missing topics, check the secrets key, then run the Faust worker in the
    foreground."""
    ensure_topics(settings)
    check_secrets_key(settings, "fanout")
    # uvloop: the worker's event loop runs every HTTP attempt and Kafka callback.
    mode.loop.use("uvloop")
    tracing.configure("fanout")  # on only where the OTEL_* variables ask for it
    app = create_app(settings)
    worker = Worker(app, loglevel=settings.log_level.lower(),
                    logging_config=logging_config(settings.log_level, settings.log_format))
    # Faust's terminal spinner, at a log level of WARNING or above, lowers the root logger
    # to DEBUG so that it can spin on every record: every debug call of aiokafka, Faust
    # and mode then built a record nobody printed (a sixth of the worker's CPU at 50
    # events/s). Without it, the levels stay as configured.
    worker.spinner = None
    worker.execute_from_commandline()
