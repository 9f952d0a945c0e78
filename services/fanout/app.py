"""Fanout worker (Faust): matches events to endpoints and delivers them."""

from __future__ import annotations

import faust
from prometheus_client import generate_latest

from webhooks.kafka import kafka_reachable
from webhooks.settings import Settings


def create_app(settings: Settings) -> faust.App:
    """Build the Faust app for ``settings``; it serves only /healthz and /metrics."""
    app = faust.App(
        f"{settings.topic_prefix}-fanout",
        broker=f"kafka://{settings.kafka_bootstrap}",
        store="memory://",
        web_port=settings.fanout_port,
        web_bind=settings.host,
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication,
    )

    @app.page("/healthz")
    async def healthz(web, request):  # type: ignore[no-untyped-def]
        ok = kafka_reachable(settings)
        return web.json({"status": "ok" if ok else "unavailable"}, status=200 if ok else 503)

    @app.page("/metrics")
    async def metrics(web, request):  # type: ignore[no-untyped-def]
        # aiohttp refuses a charset in content_type; Prometheus accepts text/plain.
        return web.text(generate_latest().decode(), content_type="text/plain; version=0.0.4")

    return app
