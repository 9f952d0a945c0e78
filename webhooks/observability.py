"""``/livez``, ``/healthz`` and ``/metrics`` for the FastAPI services, and the log format
(``WEBHOOKS_LOG_FORMAT``: readable text or one JSON object per line) of every service."""

from __future__ import annotations

import asyncio
import json
import logging
import logging.config
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

from webhooks.shutdown import GracefulShutdown

HealthCheck = Callable[[], bool]


def health_router(checks: dict[str, HealthCheck],
                  registry: CollectorRegistry = REGISTRY,
                  shutdown: GracefulShutdown | None = None) -> APIRouter:
    """Liveness, readiness (every check passes, run off the event loop) and Prometheus metrics.

    ``/livez`` answers 200 whenever the process serves HTTP and checks nothing else: the
    chart's liveness probe uses it, so a Kafka or ClickHouse outage takes pods out of their
    Service (readiness, ``/healthz``) without restarting them all. Once ``shutdown`` saw a
    SIGTERM, ``/healthz`` answers 503 at once (``shutting_down``): the pod leaves its Service
    while it finishes its work.
    """
    router = APIRouter(include_in_schema=False)

    @router.get("/livez")
    async def livez() -> JSONResponse:
        return JSONResponse({"status": "alive"})

    @router.get("/healthz")
    async def healthz() -> JSONResponse:
        if shutdown is not None and shutdown.shutting_down:
            return JSONResponse({"status": "shutting_down"}, status_code=503)
        results = {name: await asyncio.to_thread(check) for name, check in checks.items()}
        healthy = all(results.values())
        body = {"status": "ok" if healthy else "unavailable",
                "checks": {name: "ok" if ok else "failing" for name, ok in results.items()}}
        return JSONResponse(body, status_code=200 if healthy else 503)

    @router.get("/metrics")
    async def metrics() -> Response:
        # Off the event loop: some collectors (the eventlog's) query ClickHouse and Kafka.
        text = await asyncio.to_thread(generate_latest, registry)
        return Response(text, media_type=CONTENT_TYPE_LATEST)

    return router


# Fields a log call may attach with ``extra={...}`` that both formats print: what an
# operator searches by when one delivery went wrong. Never a secret or an API key.
CONTEXT_FIELDS = ("tenant", "event_id", "endpoint_id", "task_id", "attempt")


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, the context fields
    given with ``extra`` and the exception, if any."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                document[name] = value
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return json.dumps(document, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message`` and then ``name=value`` for each context field."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = " ".join(f"{name}={getattr(record, name)}" for name in CONTEXT_FIELDS
                           if getattr(record, name, None) is not None)
        if not context:
            return line
        first, newline, rest = line.partition("\n")  # keep a traceback below the context
        return f"{first} {context}{newline}{rest}"


def logging_config(log_level: str, log_format: str) -> dict[str, Any]:
    """A :func:`logging.config.dictConfig` document: every record (uvicorn's and Faust's
    too, which propagate to the root) to stderr in ``log_format`` (``text`` or ``json``).

    Given to uvicorn as its ``log_config`` and to Faust's worker as its
    ``logging_config``, so their own set-up applies this instead of their defaults.
    """
    level = log_level.upper()
    formatter = JsonFormatter if log_format == "json" else TextFormatter
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": {"()": f"{formatter.__module__}.{formatter.__qualname__}"}},
        "handlers": {"default": {"class": "logging.StreamHandler", "formatter": "default",
                                 "stream": "ext://sys.stderr"}},
        "root": {"level": level, "handlers": ["default"]},
        # uvicorn's loggers keep their level but print through the root handler.
        "loggers": {name: {"level": level, "handlers": [], "propagate": True}
                    for name in ("uvicorn", "uvicorn.error", "uvicorn.access")},
    }


def access_log(log_level: str) -> bool:
    """Whether the HTTP servers log a line per request: only at ``DEBUG``. Formatting and
    writing it cost ingest more than validating the event; /metrics counts requests."""
    return log_level.upper() == "DEBUG"


def configure_logging(log_level: str, log_format: str) -> None:
    """Apply :func:`logging_config` to this process."""
    logging.config.dictConfig(logging_config(log_level, log_format))
