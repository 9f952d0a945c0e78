"""``POST /v1/events`` and ``POST /v1/events/batch``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from http import HTTPStatus
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from services.ingest.deps import PrincipalDep, RuntimeDep
from services.ingest.pipeline import AcceptResult, IngestPipeline
from services.ingest.runtime import IngestRuntime
from webhooks import tracing
from webhooks.auth import Principal
from webhooks.event_create import (
    EventRequest,
    IntakeError,
    build_event,
    check_idempotency_key,
    item_too_large,
    parse_event_json,
    too_large,
)
from webhooks.json_schema import SchemaError, check, load_schema
from webhooks.problems import Problem, problem_responses

REPLAYED_HEADER = "Idempotent-Replayed"

Handler = Callable[[Request, IngestRuntime, Principal, "tracing.Context | None"],
                   Awaitable[Response]]

ERROR_RESPONSES = problem_responses(
    (400, "Malformed JSON or not UTF-8"),
    (401, "Missing or invalid API key"),
    (403, "A tenant key named another tenant, the key lacks the publish scope (code "
          "missing_scope), or the tenant is disabled (code tenant_disabled)"),
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


def _refuse(runtime: IngestRuntime, error: IntakeError) -> Problem:
    """The problem answering ``error``, counted as a rejection."""
    runtime.metrics.rejected.labels("http", error.reason).inc()
    return Problem(error.status, error.detail, code=error.reason)


def _validated(runtime: IngestRuntime, document: Any, caller: Principal, key: str | None
               ) -> EventRequest:
    """``document`` checked as an event of ``caller`` (an admin names the tenant)."""
    return build_event(document, caller_tenant=None if caller.is_admin else caller.tenant,
                       default_api_version=runtime.settings.api_version, idempotency_key=key)


def _pipeline(runtime: IngestRuntime) -> IngestPipeline:
    """The replica's pipeline; 503 while the replica is still starting."""
    if runtime.pipeline is None:
        raise _refuse(runtime, IntakeError(503, "unavailable", "ingest is starting; retry shortly"))
    return runtime.pipeline


# The producer-facing routes.
events_router = APIRouter(prefix="/v1/events", tags=["events"])


@events_router.post("", status_code=202, openapi_extra=_request_body("event_create.v1"),
                    responses={200: {"description": "A repeat: the original envelope"},
                               202: {"description": "Appended: the envelope"},
                               **ERROR_RESPONSES})
async def create_event(request: Request, runtime: RuntimeDep, caller: PrincipalDep) -> Response:
    """Validate one event, append it to the events topic, answer with its envelope (the
    bytes appended, as they are)."""
    return await _traced(_create_event, request, runtime, caller)


async def _traced(handler: Handler, request: Request, runtime: IngestRuntime,
                  caller: Principal) -> Response:
    """``handler``'s answer; with traces on, inside an ``ingest.accept`` span (continuing
    the caller's ``traceparent``, if any) that the handler's appends continue."""
    tracer = tracing.tracer
    if tracer is None:
        return await handler(request, runtime, caller, None)
    span = tracer.start_span("ingest.accept", context=tracing.extract(request.headers),
                             kind=tracing.SpanKind.SERVER)
    status = 500
    try:
        response = await handler(request, runtime, caller, tracing.context_of(span))
        status = response.status_code
        return response
    except Problem as problem:
        status = problem.status
        raise
    finally:
        if span.is_recording():
            span.set_attribute("http.response.status_code", status)
            if status >= 500:
                span.set_status(tracing.Status(tracing.StatusCode.ERROR))
        span.end()


async def _create_event(request: Request, runtime: IngestRuntime, caller: Principal,
                        trace: tracing.Context | None) -> Response:
    settings = runtime.settings
    try:
        raw = await read_body(request, settings.max_body_bytes)
        key = check_idempotency_key(request.headers.get("idempotency-key"))
        event = _validated(runtime, parse_event_json(raw), caller, key)
    except IntakeError as error:
        raise _refuse(runtime, error) from error
    if trace is not None:
        event = replace(event, trace=trace)
    [result] = await _pipeline(runtime).accept_many([event], source="http",
                                                         record_fresh_later=True)
    if result.error is not None:
        headers = {"Retry-After": "2"} if result.status in (409, 503) else None
        raise Problem(result.status, result.error.detail, code=result.error.reason,
                      headers=headers)
    return Response(result.envelope, status_code=result.status, media_type="application/json",
                    headers={REPLAYED_HEADER: "true"} if result.replayed else None)


@events_router.post("/batch", openapi_extra=_request_body("event_batch.v1"),
                    # A conflict on one event is answered in that event's result.
                    responses={k: v for k, v in ERROR_RESPONSES.items() if k != 409})
async def create_events(request: Request, runtime: RuntimeDep, caller: PrincipalDep) -> Response:
    """Up to 1000 events; ``data`` holds one result per event, in order.

    Each result has ``index`` and ``status`` (202 appended, 200 repeat, 4xx/5xx) and
    either ``envelope`` or ``problem``. Repeats are recognised by each event's ``id``.
    """
    return await _traced(_create_events, request, runtime, caller)


async def _create_events(request: Request, runtime: IngestRuntime, caller: Principal,
                         trace: tracing.Context | None) -> Response:
    settings = runtime.settings
    try:
        raw = await read_body(request, settings.ingest_max_batch_bytes)
        if request.headers.get("idempotency-key") is not None:
            raise IntakeError(422, "schema", "Idempotency-Key: not supported on batches; "
                                             "give each event an id instead")
        document = parse_event_json(raw)
        try:
            check("event_batch.v1", document)
        except SchemaError as exc:
            raise IntakeError(422, "schema", "; ".join(exc.errors)) from exc
    except IntakeError as error:
        raise _refuse(runtime, error) from error

    items: list[AcceptResult | None] = []
    valid: list[EventRequest] = []
    for item in document["events"]:
        try:
            if item_too_large(item, settings.max_body_bytes):
                raise too_large(settings.max_body_bytes)
            event = _validated(runtime, item, caller, None)
            valid.append(replace(event, trace=trace) if trace is not None else event)
            items.append(None)
        except IntakeError as error:
            runtime.metrics.rejected.labels("http", error.reason).inc()
            items.append(AcceptResult(error=error))
    outcomes = (iter(await _pipeline(runtime).accept_many(valid, source="http",
                                                                  record_fresh_later=True)) if valid
                else iter(()))
    data = []
    for index, item in enumerate(items):
        result = item if item is not None else next(outcomes)
        entry: dict[str, Any] = {"index": index, "status": result.status}
        if result.error is not None:
            entry["problem"] = problem_body(result.error)
        else:
            # The appended bytes, spliced in as they are (floats keep json.dumps' spelling).
            entry["envelope"] = orjson.Fragment(result.envelope)
            entry["replayed"] = result.replayed
        data.append(entry)
    return Response(orjson.dumps({"data": data}), media_type="application/json")
