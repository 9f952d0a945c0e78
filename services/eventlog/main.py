"""Entry point: ``webhooks serve eventlog``."""

from __future__ import annotations

import uvicorn

from services.eventlog.app import create_app
from services.eventlog.clickhouse import require_engine
from webhooks import garbage_collection
from webhooks.endpoint_secrets import check_secrets_key
from webhooks.observability import access_log, logging_config
from webhooks.settings import Settings


def run(settings: Settings) -> None:
    require_engine(settings.clickhouse_url)  # a chdb:// URL on the -slim image: refused now
    if settings.eventlog_role != "sink":  # the sink copies records; only the API opens them
        check_secrets_key(settings, "the eventlog API")
    # Open event streams never end by themselves: on SIGTERM, give them a few seconds,
    # then close them (clients reconnect with Last-Event-ID) instead of waiting for ever.
    app = create_app(settings)
    garbage_collection.tune()
    uvicorn.run(app, host=settings.host, port=settings.eventlog_port,
                log_level=settings.log_level.lower(), timeout_graceful_shutdown=5,
                access_log=access_log(settings.log_level),
                log_config=logging_config(settings.log_level, settings.log_format))
