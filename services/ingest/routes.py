"""``POST /v1/events`` and ``POST /v1/events/batch``."""

from __future__ import annotations

import json
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from services.ingest.pipeline import AcceptResult
from services.ingest.runtime import IngestRuntime
from webhooks.auth import ApiKeys, Principal
from webhooks.event_create import (
    EventRequest,
    IntakeError,
    build_event,
    check_idempotency_key,
    parse_event_json,
    too_large,
)
from webhooks.json_schema import SchemaError, load_schema, validate
from webhooks.problems import Problem, problem_responses

REPLAYED_HEADER = "Idempotent-Replayed"

ERROR_RESPONSES = problem_responses(
    (400, "Malformed JSON or not UTF-8"),
    (401, "Missing or invalid API key"),
    (403, "A tenant key named another tenant"),
    (409, "The same id or Idempotency-Key is being appended right now: retry"),
    (413, "Body larger than the limit"),
    (422, "Schema violation, unknown field, bad Idempotency-Key, or an admin key "
          "without tenant"),
    (503, "Kafka unavailable or ingest starting: retry later"),
)


def _inline_refs(node: Any) -> Any:
    """Replace ``{"$ref": "other.v1.json#/a/b"}`` by its target, for the OpenAPI document."""
    if isinstance(node, list):
        return [_inline_refs(item) for item in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str) and ".json#/" in ref:
        document, _, pointer = ref.partition("#/")
        target: Any = load_schema(document.removesuffix(".json"))
        for part in pointer.split("/"):
            target = target[part]
        return _inline_refs(target)
    return {key: _inline_refs(value) for key, value in node.items()
            if key not in ("$schema", "$id")}


def _request_body(schema: str) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": _inline_refs(load_schema(schema))}}}}


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 before parsing if it is (or turns out) larger than ``limit``."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large(limit)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:  # a lying or absent Content-Length
            raise too_large(limit)
    return bytes(body)


def problem_body(error: IntakeError) -> dict[str, Any]:
    """The problem document of one refused batch item."""
    return {"type": "about:blank", "title": HTTPStatus(error.status).phrase,
            "status": error.status, "detail": error.detail, "code": error.reason}


def build_router(runtime: IngestRuntime, api_keys: ApiKeys) -> APIRouter:
    """The producer-facing routes, bound to one replica's runtime."""
    settings = runtime.settings
    metrics = runtime.metrics
    authenticate = api_keys.dependency()

    async def counted_auth(request: Request) -> Principal:
        # async on purpose: a key lookup is cheap, and a sync dependency would cost a
        # thread-pool hop per request.
        try:
            return authenticate(request)
        except Problem:
            metrics.rejected.labels("http", "unauthorized").inc()
            raise

    router = APIRouter(prefix="/v1/events", tags=["events"])

    def refuse(error: IntakeError) -> Problem:
        metrics.rejected.labels("http", error.reason).inc()
        return Problem(error.status, error.detail, code=error.reason)

    def validated(document: Any, caller: Principal, key: str | None) -> EventRequest:
        return build_event(document, caller_tenant=None if caller.is_admin else caller.tenant,
                           default_api_version=settings.api_version, idempotency_key=key)

    def pipeline_call() -> Callable[..., Any]:
        if runtime.pipeline is None:
            raise refuse(IntakeError(503, "unavailable", "ingest is starting; retry shortly"))
        return runtime.pipeline.accept_many

    @router.post("", status_code=202, openapi_extra=_request_body("event_create.v1"),
                 responses={200: {"description": "A repeat: the original envelope"},
                            202: {"description": "Appended: the envelope"},
                            **ERROR_RESPONSES})
    async def create_event(request: Request,
                           caller: Principal = Depends(counted_auth)) -> JSONResponse:
        """Validate one event, append it to the events topic, answer with its envelope."""
        try:
            raw = await read_body(request, settings.max_body_bytes)
            key = check_idempotency_key(request.headers.get("idempotency-key"))
            event = validated(parse_event_json(raw), caller, key)
        except IntakeError as error:
            raise refuse(error) from error
        [result] = await pipeline_call()([event], source="http")
        if result.error is not None:
            headers = {"Retry-After": "2"} if result.status in (409, 503) else None
            raise Problem(result.status, result.error.detail, code=result.error.reason,
                          headers=headers)
        return JSONResponse(result.envelope.model_dump(), status_code=result.status,
                            headers={REPLAYED_HEADER: "true"} if result.replayed else None)

    @router.post("/batch", openapi_extra=_request_body("event_batch.v1"),
                 # A conflict on one event is answered in that event's result.
                 responses={k: v for k, v in ERROR_RESPONSES.items() if k != 409})
    async def create_events(request: Request,
                            caller: Principal = Depends(counted_auth)) -> JSONResponse:
        """Up to 1000 events; ``data`` holds one result per event, in order.

        Each result has ``index`` and ``status`` (202 appended, 200 repeat, 4xx/5xx) and
        either ``envelope`` or ``problem``. Repeats are recognised by each event's ``id``.
        """
        try:
            raw = await read_body(request, settings.ingest_max_batch_bytes)
            if request.headers.get("idempotency-key") is not None:
                raise IntakeError(422, "schema", "Idempotency-Key: not supported on batches; "
                                                 "give each event an id instead")
            document = parse_event_json(raw)
            try:
                validate("event_batch.v1", document)
            except SchemaError as exc:
                raise IntakeError(422, "schema", "; ".join(exc.errors)) from exc
        except IntakeError as error:
            raise refuse(error) from error

        items: list[AcceptResult | None] = []
        valid: list[EventRequest] = []
        for item in document["events"]:
            try:
                if len(json.dumps(item).encode()) > settings.max_body_bytes:
                    raise too_large(settings.max_body_bytes)
                valid.append(validated(item, caller, None))
                items.append(None)
            except IntakeError as error:
                metrics.rejected.labels("http", error.reason).inc()
                items.append(AcceptResult(error=error))
        outcomes = iter(await pipeline_call()(valid, source="http")) if valid else iter(())
        data = []
        for index, item in enumerate(items):
            result = item if item is not None else next(outcomes)
            entry: dict[str, Any] = {"index": index, "status": result.status}
            if result.error is not None:
                entry["problem"] = problem_body(result.error)
            else:
                entry["envelope"] = result.envelope.model_dump()
                entry["replayed"] = result.replayed
            data.append(entry)
        return JSONResponse({"data": data}, status_code=200)

    return router
