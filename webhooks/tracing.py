"""Traces (OpenTelemetry) from the ingest request through Kafka to each delivery attempt.

One trace per event::

    ingest.accept (server: the POST; a batch's events share it)
      └─ ingest.append (producer: the event's write to the events topic; for a record of
           │             the Kafka intake, continuing the trace its headers carry, if any)
           └─ fanout.match (consumer: the event matched against the endpoints)
                ├─ fanout.attempt (client: one POST to one endpoint; its traceparent
                │                  header lets a receiver that traces join)
                └─ fanout.attempt (a retry, read back from a retry tier)

The context travels in Kafka record headers (W3C ``traceparent``/``tracestate``): ingest
puts the append's on the event record, the fanout puts the match's on every task record
it writes to a retry tier or the ordered topic, so later attempts join the same trace.

Off unless the standard variables turn it on: ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) set, or ``OTEL_TRACES_EXPORTER`` naming
``otlp`` or ``console``; ``OTEL_SDK_DISABLED=true`` wins. The sampler is the SDK's, from
``OTEL_TRACES_SAMPLER``/``OTEL_TRACES_SAMPLER_ARG`` (e.g. ``parentbased_traceidratio``
and ``0.01``: the root at ingest decides, every later span follows its parent), the
service name from ``OTEL_SERVICE_NAME`` (default ``webhooks-<service>``). Spans leave
through the OTLP/HTTP exporter in batches, off the hot path.

While off, :data:`tracer` is None and every hot path checks only that: no span objects,
no headers, nothing to propagate.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from webhooks.envelope import Envelope

log = logging.getLogger(__name__)

__all__ = ["Context", "Span", "SpanKind", "Status", "StatusCode", "Trace", "Tracer",
           "configure", "context_of", "event_attributes", "extract", "http_headers",
           "kafka_headers", "sampled", "shutdown", "tracer"]

tracer: Tracer | None = None
"""The process's tracer once :func:`configure` turned tracing on; None while off."""

_provider: TracerProvider | None = None
_propagator = TraceContextTextMapPropagator()

KafkaHeaders = list[tuple[str, bytes]]


def wanted(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the ``OTEL_*`` variables ask for traces (see the module docstring)."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = {name.strip().lower()
                 for name in env.get("OTEL_TRACES_EXPORTER", "").split(",") if name.strip()}
    if exporters == {"none"}:
        return False
    return bool(exporters & {"otlp", "console"}) or any(
        env.get(name) for name in ("OTEL_EXPORTER_OTLP_ENDPOINT",
                                   "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def configure(service: str, exporter: SpanExporter | None = None) -> bool:
    """Turn tracing on for this process if the environment asks for it (or an
    ``exporter`` is given: tests pass an in-memory one, whose spans are exported at
    once); True when on."""
    global tracer, _provider
    if exporter is None and not wanted():
        return False
    name = os.environ.get("OTEL_SERVICE_NAME") or f"webhooks-{service}"
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        for chosen in _exporters():
            provider.add_span_processor(BatchSpanProcessor(chosen))
    _provider = provider
    tracer = provider.get_tracer("kafka-webhooks")
    log.info("traces on: service %s, exported over %s", name,
             "a given exporter" if exporter is not None else "OTLP/HTTP")
    return True


def _exporters() -> list[SpanExporter]:
    names = {name.strip().lower()
             for name in os.environ.get("OTEL_TRACES_EXPORTER", "otlp").split(",")}
    chosen: list[SpanExporter] = []
    if "otlp" in names or not names & {"console"}:
        # Imported only when used: the exporter pulls in protobuf and requests.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        chosen.append(OTLPSpanExporter())  # endpoint, headers, timeout from OTEL_EXPORTER_*
    if "console" in names:
        chosen.append(ConsoleSpanExporter())
    return chosen


def shutdown() -> None:
    """Flush the spans still queued and turn tracing off (process exit, tests)."""
    global tracer, _provider
    if _provider is not None:
        _provider.shutdown()
    tracer = None
    _provider = None


def extract(headers: Mapping[str, bytes | str] | Iterable[tuple[str, bytes | str]] | None
            ) -> Context | None:
    """The trace context carried by Kafka record headers or HTTP headers; None without
    one (a span then starts a trace of its own)."""
    if not headers:
        return None
    carrier: dict[str, str] = {}
    items = headers.items() if isinstance(headers, Mapping) else headers
    for name, value in items:
        lowered = name.lower()
        if lowered in ("traceparent", "tracestate") and value is not None:
            carrier[lowered] = value.decode("latin-1") if isinstance(value, bytes) else value
    if "traceparent" not in carrier:
        return None
    context = _propagator.extract(carrier)
    return context if trace.get_current_span(context).get_span_context().is_valid else None


def sampled(context: Context | None) -> bool:
    """Whether the trace of ``context`` is being recorded (its sampled flag)."""
    return context is not None and \
        trace.get_current_span(context).get_span_context().trace_flags.sampled


class Trace:
    """A trace context as work carries it on: the parent's context, whether its trace is
    sampled, and its header forms, made once however many deliveries carry them.

    An unsampled trace costs the deliveries nothing more than its ``traceparent``: no
    span is started for them (the SDK would drop it anyway), and the header they carry
    names the unsampled parent, so a receiver still sees the decision.
    """

    __slots__ = ("context", "sampled", "_http", "_kafka")

    def __init__(self, context: Context) -> None:
        self.context = context
        self.sampled = sampled(context)
        self._http: dict[str, str] | None = None
        self._kafka: KafkaHeaders | None = None

    @classmethod
    def of(cls, parent: Span | Context | None) -> Trace | None:
        """The trace of a span (its children's parent) or of an extracted context."""
        if parent is None:
            return None
        return cls(parent if isinstance(parent, Context) else context_of(parent))

    @property
    def http(self) -> dict[str, str]:
        """``traceparent`` (and ``tracestate``) for an HTTP request."""
        if self._http is None:
            self._http = http_headers(self.context)
        return self._http

    @property
    def kafka(self) -> KafkaHeaders:
        """The same as Kafka record headers."""
        if self._kafka is None:
            self._kafka = [(name, value.encode("latin-1")) for name, value in self.http.items()]
        return self._kafka


def event_attributes(envelope: Envelope) -> dict[str, str]:
    """The attributes naming an event on its spans."""
    return {"webhooks.tenant": envelope.tenant, "webhooks.event_id": envelope.id,
            "webhooks.event_type": envelope.type}


def context_of(span: Span) -> Context:
    """A context whose current span is ``span`` (the parent of the spans it leads to)."""
    return trace.set_span_in_context(span)


def http_headers(parent: Span | Context) -> dict[str, str]:
    """``traceparent`` (and ``tracestate``) naming ``parent`` (a span, or a context's
    current span), for an HTTP request."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier, context=parent if isinstance(parent, Context)
                       else context_of(parent))
    return carrier


def kafka_headers(parent: Span | Context | None) -> KafkaHeaders | None:
    """The same as Kafka record headers; None without a parent."""
    if parent is None:
        return None
    return [(name, value.encode("latin-1")) for name, value in http_headers(parent).items()]
