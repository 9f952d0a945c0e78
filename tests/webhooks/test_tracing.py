"""When traces turn on, and how their context crosses Kafka headers and HTTP headers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from webhooks import tracing

PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.mark.parametrize(("environ", "on"), [
    ({}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
    ({"OTEL_TRACES_EXPORTER": "console"}, True),
    ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, False),
    ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, False),
    ({"OTEL_SERVICE_NAME": "ingest"}, False),  # naming a service asks for nothing
])
def test_traces_are_on_only_where_the_standard_variables_ask(environ: dict[str, str],
                                                             on: bool) -> None:
    assert tracing.wanted(environ) is on


def test_off_by_default_leaves_no_tracer(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                 "OTEL_TRACES_EXPORTER"):
        monkeypatch.delenv(name, raising=False)
    assert tracing.configure("ingest") is False
    assert tracing.tracer is None


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracing.configure("test", exporter=exporter)
    yield exporter
    tracing.shutdown()


def test_a_context_crosses_kafka_headers_and_http_headers(spans: InMemorySpanExporter) -> None:
    assert tracing.tracer is not None
    parent = tracing.extract({"TraceParent": PARENT})  # HTTP header names in any case
    span = tracing.tracer.start_span("ingest.append", context=parent)
    record_headers = tracing.kafka_headers(span)
    span.end()

    assert record_headers is not None
    carried = tracing.extract(dict(record_headers))  # as Faust hands record headers over
    child = tracing.tracer.start_span("fanout.match", context=carried)
    child.end()
    [sent, received] = spans.get_finished_spans()
    assert received.parent.span_id == sent.context.span_id
    assert sent.parent.span_id == int("b7ad6b7169203331", 16)
    assert tracing.http_headers(child)["traceparent"].startswith(
        "00-0af7651916cd43dd8448eb211c80319c-")


ALL_ZERO = b"00-00000000000000000000000000000000-0000000000000000-01"  # an invalid id


@pytest.mark.parametrize("headers", [None, {}, {"tracestate": b"a=b"},
                                     {"traceparent": b"not a traceparent"},
                                     [("traceparent", ALL_ZERO)]])
def test_headers_without_a_valid_context_start_a_trace_of_their_own(
        headers: dict[str, bytes] | list[tuple[str, bytes]] | None) -> None:
    assert tracing.extract(headers) is None
    assert tracing.kafka_headers(None) is None
