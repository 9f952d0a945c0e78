"""``/healthz`` and ``/metrics`` for the FastAPI services."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

HealthCheck = Callable[[], bool]


def health_router(checks: dict[str, HealthCheck],
                  registry: CollectorRegistry = REGISTRY) -> APIRouter:
    """Readiness (every check passes, run off the event loop) and Prometheus metrics."""
    router = APIRouter(include_in_schema=False)

    @router.get("/healthz")
    async def healthz() -> JSONResponse:
        results = {name: await asyncio.to_thread(check) for name, check in checks.items()}
        healthy = all(results.values())
        body = {"status": "ok" if healthy else "unavailable",
                "checks": {name: "ok" if ok else "failing" for name, ok in results.items()}}
        return JSONResponse(body, status_code=200 if healthy else 503)

    @router.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return router
