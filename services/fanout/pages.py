"""The fanout's web pages: /livez (alive), /healthz (ready to deliver?), /metrics (Prometheus)."""

from __future__ import annotations

import asyncio

import faust
from prometheus_client import generate_latest

from services.fanout.endpoint_view import EndpointView
from services.fanout.metrics import FanoutMetrics
from webhooks.kafka import kafka_reachable
from webhooks.settings import Settings


def add_pages(app: faust.App, settings: Settings, view: EndpointView,
              metrics: FanoutMetrics) -> None:
    """Serve /livez, /healthz and /metrics on ``app``'s web server."""

    @app.page("/livez")
    async def livez(web, request):  # type: ignore[no-untyped-def]
        # The liveness probe: the worker's event loop answers. Kafka is /healthz's concern.
        return web.json({"status": "alive"})

    @app.page("/healthz")
    async def healthz(web, request):  # type: ignore[no-untyped-def]
        # 503 until the endpoints view caught up: the agents consume nothing before that.
        ok = view.ready and await asyncio.to_thread(kafka_reachable, settings.kafka)
        return web.json({"status": "ok" if ok else "unavailable",
                         "endpoints": len(view), "view_ready": view.ready},
                        status=200 if ok else 503)

    @app.page("/metrics")
    async def metrics_page(web, request):  # type: ignore[no-untyped-def]
        # aiohttp refuses a charset in content_type; Prometheus accepts text/plain.
        return web.text(generate_latest(metrics.registry).decode(),
                        content_type="text/plain; version=0.0.4")
