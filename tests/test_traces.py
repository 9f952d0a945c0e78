"""Traces across the processes: one event's trace from the ingest request through Kafka
to every delivery attempt, exported over OTLP/HTTP by the real services.

Ingest and the fanout run as deployed (``webhooks serve``, each its own process) with
only the standard ``OTEL_*`` variables set; their spans go to a collector on loopback
(a recording HTTP server, decoded with the OpenTelemetry protobuf types). The client
sends a ``traceparent`` of its own, so the whole trace must hang under it; the receiver
fails the first attempt, so the retry read back from the tier topic must join it too.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from services.fanout.endpoint_view import EndpointView
from services.ingest.app import create_app
from services.localdev.service_process import ServiceProcess
from tests.services.fanout.harness import Platform
from tests.services.fanout.test_worker_disable import make_worker
from tests.support.eventlog import eventually
from tests.support.kafka import read_topic
from tests.support.receiver import Received, Receiver
from webhooks import tracing
from webhooks.endpoints import Endpoint
from webhooks.envelope import Envelope
from webhooks.settings import Settings
from webhooks.topics import Topics, ensure_topics

CLIENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPAN = "b7ad6b7169203331"


@dataclass(frozen=True)
class ExportedSpan:
    """A span as a service exported it."""

    service: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict[str, object]


def exported_spans(collector: Receiver) -> list[ExportedSpan]:
    """Every span the collector got so far."""
    spans = []
    for request in collector.at("/v1/traces"):
        export = ExportTraceServiceRequest.FromString(request.body)
        for resource in export.resource_spans:
            service = next(a.value.string_value for a in resource.resource.attributes
                           if a.key == "service.name")
            for scope in resource.scope_spans:
                for span in scope.spans:
                    attributes = {a.key: getattr(a.value, a.value.WhichOneof("value"))
                                  for a in span.attributes}
                    spans.append(ExportedSpan(service, span.name, span.trace_id.hex(),
                                              span.span_id.hex(), span.parent_span_id.hex(),
                                              attributes))
    return spans


def sent_span(received: Received) -> tuple[str, str, bool]:
    """The trace id, parent span id and sampled flag of a request's ``traceparent``."""
    version, trace_id, span_id, flags = received.headers["traceparent"].split("-")
    assert version == "00"
    return trace_id, span_id, bool(int(flags, 16) & 1)  # other bits: e.g. W3C's "random"


@pytest.fixture(scope="module")
def collector() -> Iterator[Receiver]:
    """Stands for an OpenTelemetry collector's OTLP/HTTP receiver."""
    server = Receiver().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def traced_settings(make_settings: Callable[..., Settings]) -> Settings:
    settings = make_settings(retry_schedule="1s")
    ensure_topics(settings)
    return settings


@pytest.fixture(scope="module")
def traced_endpoint(traced_settings: Settings, receiver: Receiver) -> tuple[Endpoint, str]:
    """An endpoint whose receiver fails the first request, written before the fanout
    starts (so its view holds it); and the receiver's path."""
    url = receiver.on("/traced", lambda n: (500, {}, 0.0) if n == 1 else (200, {}, 0.0))
    return Platform(traced_settings).endpoint(url, ["order.*"]), "/traced"


@pytest.fixture(scope="module")
def traced_stack(traced_settings: Settings, traced_endpoint: tuple[Endpoint, str],
                 collector: Receiver, tmp_path_factory: pytest.TempPathFactory
                 ) -> Iterator[dict[str, ServiceProcess]]:
    """Ingest and the fanout with traces on, exporting to the collector."""
    otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url(""),
            "OTEL_BSP_SCHEDULE_DELAY": "100"}  # export every 100 ms, not every 5 s
    logs: Path = tmp_path_factory.mktemp("traces-logs")
    running: dict[str, ServiceProcess] = {}
    try:
        for name in ("fanout", "ingest"):
            running[name] = ServiceProcess(name, traced_settings, logs / f"{name}.log",
                                           env=otel).start()
        yield running
    finally:
        for process in running.values():
            process.stop()


def test_one_event_is_one_trace_from_the_request_to_every_attempt(
        traced_stack: dict[str, ServiceProcess], traced_endpoint: tuple[Endpoint, str],
        receiver: Receiver, collector: Receiver) -> None:
    endpoint, path = traced_endpoint
    answer = httpx.post(f"{traced_stack['ingest'].url}/v1/events", timeout=10.0, headers={
        "Authorization": "Bearer key-acme",
        "traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"},
        json={"type": "order.created", "data": {"object": {"id": "o-1"}}})
    assert answer.status_code == 202, answer.text
    event_id = answer.json()["id"]
    attempts = receiver.wait_for(path, 2)

    def trace_complete() -> list[ExportedSpan] | None:
        spans = [s for s in exported_spans(collector) if s.trace_id == CLIENT_TRACE]
        return spans if sum(s.name == "fanout.attempt" for s in spans) == 2 else None

    spans = eventually(trace_complete, timeout=20.0)
    by_name: dict[str, list[ExportedSpan]] = {}
    for span in spans:
        by_name.setdefault(span.name, []).append(span)
    [accept] = by_name["ingest.accept"]
    [append] = by_name["ingest.append"]
    [match] = by_name["fanout.match"]
    first, retry = sorted(by_name["fanout.attempt"], key=lambda s: s.attributes["webhooks.attempt"])

    assert (accept.service, append.service, match.service) == (
        "webhooks-ingest", "webhooks-ingest", "webhooks-fanout")
    assert accept.parent_id == CLIENT_SPAN  # the client's own trace, continued
    assert append.parent_id == accept.span_id
    assert match.parent_id == append.span_id  # across Kafka, in the event record's headers
    # The retry was read back from the tier topic: its record carried the trace on.
    assert first.parent_id == retry.parent_id == match.span_id
    assert append.attributes["webhooks.event_id"] == match.attributes["webhooks.event_id"] \
        == event_id
    assert match.attributes["webhooks.endpoints_matched"] == 1
    assert (first.attributes["webhooks.endpoint_id"], first.attributes["webhooks.attempt"],
            first.attributes["http.response.status_code"], first.attributes["error.type"]) \
        == (endpoint.id, 1, 500, "http_status")
    assert (retry.attributes["webhooks.attempt"],
            retry.attributes["http.response.status_code"]) == (2, 200)
    assert "error.type" not in retry.attributes
    # Each request names its attempt's span, so a receiver that traces joins the trace.
    assert [sent_span(a) for a in attempts] == [(CLIENT_TRACE, first.span_id, True),
                                                (CLIENT_TRACE, retry.span_id, True)]


@pytest.fixture
def in_memory_spans() -> Iterator[InMemorySpanExporter]:
    """Traces on in this process, kept by the SDK's in-memory exporter."""
    exporter = InMemorySpanExporter()
    tracing.configure("test", exporter=exporter)
    yield exporter
    tracing.shutdown()


async def through_the_pipeline(make_settings: Callable[..., Settings], receiver: Receiver,
                               path: str, headers: dict[str, str]) -> tuple[str, Received]:
    """One event through the ingest app, the real broker and the fanout worker's matching
    and attempt, all in this process (topics of its own): its task's endpoint id, and
    what the receiver got."""
    settings = make_settings(topic_prefix=f"mem{uuid.uuid4().hex[:8]}")
    ensure_topics(settings)
    topics = Topics.from_settings(settings)
    Platform(settings).endpoint(receiver.on(path, lambda n: (200, {}, 0.0)), ["invoice.*"])
    with TestClient(create_app(settings)) as ingest:
        answer = ingest.post("/v1/events", json={"type": "invoice.created", "data": {}},
                             headers={"Authorization": "Bearer key-acme", **headers})
    assert answer.status_code == 202, answer.text
    [record] = read_topic(settings, topics.events, expect=1)

    view = EndpointView(settings.kafka, topics.endpoints)
    view.start()
    try:
        assert await asyncio.to_thread(view.wait_ready, 30)
        worker = make_worker(settings, view)
        durable = asyncio.Event()
        [task] = worker.fan_out(Envelope.from_json(record.value()), on_durable=durable.set,
                                trace=tracing.Trace.of(tracing.extract(record.headers())))
        await asyncio.wait_for(durable.wait(), 30)
        await worker.deliverer.aclose()
    finally:
        view.stop()
    [received] = receiver.at(path)
    return task.endpoint_id, received


async def test_the_same_trace_in_one_process_with_the_sdks_in_memory_exporter(
        make_settings: Callable[..., Settings], receiver: Receiver,
        in_memory_spans: InMemorySpanExporter) -> None:
    endpoint_id, received = await through_the_pipeline(make_settings, receiver, "/sampled", {})

    spans = {span.name: span for span in in_memory_spans.get_finished_spans()}
    accept, append, match, attempt = (spans[name] for name in (
        "ingest.accept", "ingest.append", "fanout.match", "fanout.attempt"))
    assert accept.parent is None  # the client sent no traceparent: the trace starts here
    assert append.parent.span_id == accept.context.span_id
    assert match.parent.span_id == append.context.span_id
    assert attempt.parent.span_id == match.context.span_id
    assert len({span.context.trace_id for span in spans.values()}) == 1
    assert attempt.attributes["webhooks.endpoint_id"] == endpoint_id
    assert attempt.attributes["http.response.status_code"] == 200
    assert sent_span(received) == (f"{attempt.context.trace_id:032x}",
                                   f"{attempt.context.span_id:016x}", True)


async def test_an_unsampled_trace_records_nothing_and_still_reaches_the_receiver(
        make_settings: Callable[..., Settings], receiver: Receiver,
        in_memory_spans: InMemorySpanExporter) -> None:
    """The caller decided not to sample: no span is recorded anywhere, yet the delivery
    names the caller's trace (flags 00), so the receiver sees the decision."""
    _, received = await through_the_pipeline(make_settings, receiver, "/unsampled", {
        "traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-00"})

    assert in_memory_spans.get_finished_spans() == ()
    trace_id, _, sampled = sent_span(received)
    assert (trace_id, sampled) == (CLIENT_TRACE, False)
