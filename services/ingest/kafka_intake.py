"""The Kafka intake: raw JSON events from ``Topics.ingest`` to the events topic.

Producers that publish straight to Kafka write one event per message, the same JSON
as the body of ``POST /v1/events``. Intake is a trusted path, so the message names
its ``tenant`` field (required, like an admin key); an ``idempotency-key`` header is
honoured like the HTTP header. Each message goes through the same validation
(:mod:`webhooks.event_create`) and the same claims (:class:`IngestPipeline`).

A message without an ``id`` gets one derived from its position (topic, partition,
offset) and timestamp: re-reading it after a crash yields the same event id, which the
idempotency ledger recognises, so a re-read never appends a second copy.

Invalid messages go to ``Topics.ingest_rejected`` with the original key, value and
headers, plus ``rejection-code``, ``rejection-reason``, ``source-topic``,
``source-partition`` and ``source-offset`` headers. Offsets are committed only after
every output of a batch was acknowledged; otherwise the batch is read again.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import defaultdict
from dataclasses import replace

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition
from ulid import ULID

from services.ingest.metrics import IngestMetrics
from services.ingest.pipeline import IngestPipeline
from webhooks import tracing
from webhooks.acked_producer import AckedProducer
from webhooks.background import BackgroundWorker
from webhooks.event_create import (
    EventRequest,
    IntakeError,
    build_event,
    parse_event_json,
    too_large,
)
from webhooks.kafka import create_consumer, poll_batch
from webhooks.settings import Settings
from webhooks.topics import Topics

log = logging.getLogger(__name__)

INTAKE_GROUP = "ingest-intake"
IDEMPOTENCY_KEY_HEADER = "idempotency-key"
BATCH_SIZE = 2000  # per poll: one claim, append and acceptance round trip each
RETRY_PAUSE = 1.0


def derived_event_id(message: Message) -> str:
    """A stable ``evt_`` ULID for a message: its timestamp, and a hash of its position."""
    timestamp_type, timestamp_ms = message.timestamp()
    millis = max(timestamp_ms, 0) if timestamp_type else 0
    position = f"{message.topic()}/{message.partition()}/{message.offset()}".encode()
    randomness = hashlib.blake2b(position, digest_size=10).digest()
    return f"evt_{ULID.from_bytes(millis.to_bytes(6, 'big') + randomness)}"


def _header(message: Message, name: str) -> str | None:
    for key, value in message.headers() or []:
        if key.lower() == name and value is not None:
            return value.decode("utf-8", "replace")
    return None


class KafkaIntake(BackgroundWorker):
    """A background thread consuming the ingest topic until :meth:`stop`.

    :meth:`stop` finishes the batch in hand (bounded by the produce timeout), commits and
    closes; an unexpected error ends the thread (logged, and :attr:`running` turns False).
    """

    thread_name = "kafka-intake"
    stop_timeout = 15.0

    def __init__(self, settings: Settings, pipeline: IngestPipeline, producer: AckedProducer,
                 metrics: IngestMetrics) -> None:
        super().__init__()
        self._settings = settings
        self._topics = Topics.from_settings(settings)
        self._pipeline = pipeline
        self._producer = producer
        self._metrics = metrics

    @property
    def running(self) -> bool:
        """False once the intake thread ended (stopped, or failed: see the log)."""
        return self.alive

    def run(self) -> None:
        # librdkafka's fetch wait (500 ms) delays nothing: the broker answers a waiting
        # fetch as soon as a record arrives. 50 ms cost the broker 20 empty fetches a
        # second per idle replica.
        consumer = create_consumer(self._settings.kafka, INTAKE_GROUP)
        consumer.subscribe([self._topics.ingest])
        try:
            asyncio.run(self._consume(consumer))
        finally:
            consumer.close()

    async def _consume(self, consumer: Consumer) -> None:
        while not self._stopping.is_set():
            messages = [m for m in poll_batch(consumer, BATCH_SIZE, 0.2) if self._usable(m)]
            if not messages:
                continue
            if await self._process(messages):
                try:
                    consumer.commit(offsets=self._next_offsets(messages), asynchronous=False)
                except KafkaException as exc:  # e.g. rebalanced: re-reads are deduplicated
                    log.warning("kafka intake commit failed: %s", exc)
            else:
                self._rewind(consumer, messages)
                self._stopping.wait(RETRY_PAUSE)

    @staticmethod
    def _usable(message: Message) -> bool:
        if message.error():
            log.warning("kafka intake: %s", message.error())
            return False
        return True

    async def _process(self, messages: list[Message]) -> bool:
        """Handle one batch; True when every output was acknowledged."""
        accepted: list[tuple[Message, EventRequest]] = []
        refused: list[tuple[Message, IntakeError]] = []
        traced = tracing.tracer is not None
        for message in messages:
            try:
                request = self._validate(message)
                if traced:  # the producer's trace, if its record carries one
                    request = replace(request, trace=tracing.extract(message.headers()))
                accepted.append((message, request))
            except IntakeError as error:
                refused.append((message, error))

        results = await self._pipeline.accept_many([r for _, r in accepted], source="kafka")
        complete = True
        for (message, _), result in zip(accepted, results, strict=True):
            if result.error is None:
                continue
            if result.status in (409, 503):
                complete = False  # transient: read the batch again later
            else:
                refused.append((message, result.error))

        rejections = [(message, error, self._reject(message, error)) for message, error in refused]
        for message, error, written in rejections:
            try:
                await asyncio.wrap_future(written)
                self._metrics.rejected.labels("kafka", error.reason).inc()
            except Exception as exc:
                log.warning("could not write rejection of %s/%d/%d: %s", message.topic(),
                            message.partition(), message.offset(), exc)
                complete = False
        return complete

    def _validate(self, message: Message) -> EventRequest:
        raw = message.value() or b""
        if len(raw) > self._settings.max_body_bytes:
            raise too_large(self._settings.max_body_bytes)
        return build_event(parse_event_json(raw), caller_tenant=None,
                           default_api_version=self._settings.api_version,
                           idempotency_key=_header(message, IDEMPOTENCY_KEY_HEADER),
                           event_id=derived_event_id(message))

    def _reject(self, message: Message, error: IntakeError):  # -> Future[Acknowledged]
        headers = list(message.headers() or []) + [
            ("rejection-code", error.reason.encode()),
            ("rejection-reason", error.detail.encode()),
            ("rejection-status", str(error.status).encode()),
            ("source-topic", message.topic().encode()),
            ("source-partition", str(message.partition()).encode()),
            ("source-offset", str(message.offset()).encode()),
        ]
        return self._producer.produce(self._topics.ingest_rejected, message.value(),
                                      key=message.key(), headers=headers)

    @staticmethod
    def _next_offsets(messages: list[Message]) -> list[TopicPartition]:
        latest: dict[tuple[str, int], int] = {}
        for message in messages:
            place = (message.topic(), message.partition())
            latest[place] = max(latest.get(place, -1), message.offset())
        return [TopicPartition(topic, partition, offset + 1)
                for (topic, partition), offset in latest.items()]

    @staticmethod
    def _rewind(consumer: Consumer, messages: list[Message]) -> None:
        """Seek back to the first message of the batch in each partition."""
        first: dict[tuple[str, int], int] = defaultdict(lambda: 1 << 62)
        for message in messages:
            place = (message.topic(), message.partition())
            first[place] = min(first[place], message.offset())
        for (topic, partition), offset in first.items():
            try:
                consumer.seek(TopicPartition(topic, partition, offset))
            except KafkaException as exc:  # revoked meanwhile: its new owner re-reads it
                log.info("rewind of %s/%d skipped: %s", topic, partition, exc)
