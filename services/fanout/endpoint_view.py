"""The complete endpoints view, materialised by each worker from the compacted topic.

Events are keyed by tenant and endpoints by endpoint id, so a worker cannot rely on
co-partitioning: every worker reads *all* partitions of the endpoints topic from the
beginning (``assign()``, no consumer group offsets) and keeps following it. A restart
simply rebuilds the view. A tombstone (value ``None``) deletes an endpoint.

:meth:`EndpointView.wait_ready` blocks until the view has caught up with the end
offsets seen at start-up, so that events handled right after a start match against
the full configuration rather than an empty table.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from webhooks.background import BackgroundWorker
from webhooks.endpoints import Endpoint
from webhooks.envelope import Envelope
from webhooks.json_schema import SchemaError
from webhooks.kafka import end_offsets
from webhooks.settings import Settings

log = logging.getLogger(__name__)


class EndpointView(BackgroundWorker):
    """Endpoint id -> :class:`Endpoint`, kept current by a background consumer thread.

    If the thread fails, the error is logged and kept: :meth:`wait_ready` raises it.
    """

    thread_name = "endpoint-view"
    stop_timeout = 5.0

    def __init__(self, settings: Settings, topic: str) -> None:
        super().__init__()
        self._settings = settings
        self._topic = topic
        self._endpoints: dict[str, Endpoint] = {}
        self._by_tenant: dict[str, dict[str, Endpoint]] = {}
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._positions: dict[int, int] = {}  # last offset applied, per partition

    # -- reading -------------------------------------------------------------------

    def get(self, endpoint_id: str) -> Endpoint | None:
        """The endpoint's current record, or None if unknown or deleted."""
        return self._endpoints.get(endpoint_id)

    def matching(self, envelope: Envelope) -> list[Endpoint]:
        """Endpoints of the envelope's tenant whose filters want it (enabled ones only)."""
        candidates = self._by_tenant.get(envelope.tenant, {})
        return [endpoint for endpoint in list(candidates.values()) if endpoint.wants(envelope)]

    def __len__(self) -> int:
        return len(self._endpoints)

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until caught up with the start-up end offsets; False on timeout."""
        if not self._ready.wait(timeout):
            if self.failure is not None:
                raise RuntimeError("endpoints view failed") from self.failure
            return False
        return True

    def catch_up(self, timeout: float) -> bool:
        """Block until the view has applied every record written to the topic before this
        call; False on timeout. A writer that derives a record from the view calls this
        first, so that it does not overwrite a change (or a delete) it has not seen."""
        deadline = time.monotonic() + timeout
        try:
            targets = self._end_offsets_now(timeout)
        except KafkaException:
            return False
        while not self._has_read_up_to(targets):
            if time.monotonic() >= deadline or self.failure is not None:
                return False
            time.sleep(0.05)
        return True

    def _end_offsets_now(self, timeout: float) -> dict[int, int]:
        consumer = Consumer({**self._settings.kafka_client_config(),
                             "group.id": f"{self._settings.topic_prefix}.endpoint-view-check"})
        try:
            return end_offsets(consumer, self._topic, timeout)
        finally:
            consumer.close()

    # -- writing -------------------------------------------------------------------

    def apply(self, endpoint_id: str, value: bytes | None) -> None:
        """Apply one record of the endpoints topic (``None`` = tombstone = delete)."""
        if value is None:
            self._remove(endpoint_id)
            return
        # A bad record must not stop the view; it is logged and skipped. The log names
        # the fields but never the error messages: they quote values, signing secrets too.
        try:
            endpoint = Endpoint.from_json(value)
        except SchemaError as exc:
            log.error("skipping invalid endpoint record %s: invalid %s", endpoint_id,
                      ", ".join(exc.fields))
            return
        except Exception as exc:
            log.error("skipping unreadable endpoint record %s: %s", endpoint_id,
                      type(exc).__name__)
            return
        self.put(endpoint)

    def put(self, endpoint: Endpoint) -> None:
        """Store ``endpoint`` (also used to apply this worker's own writes immediately)."""
        with self._lock:
            previous = self._endpoints.get(endpoint.id)
            if previous is not None and previous.tenant != endpoint.tenant:
                self._by_tenant.get(previous.tenant, {}).pop(endpoint.id, None)
            self._endpoints[endpoint.id] = endpoint
            self._by_tenant.setdefault(endpoint.tenant, {})[endpoint.id] = endpoint

    def _remove(self, endpoint_id: str) -> None:
        with self._lock:
            previous = self._endpoints.pop(endpoint_id, None)
            if previous is not None:
                self._by_tenant.get(previous.tenant, {}).pop(endpoint_id, None)

    # -- the follower thread -------------------------------------------------------

    def run(self) -> None:
        consumer = Consumer({
            **self._settings.kafka_client_config(),
            # Required by librdkafka even with assign(); nothing is ever committed.
            "group.id": f"{self._settings.topic_prefix}.endpoint-view.{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
        })
        try:
            targets = self._start_position(consumer)
            consumer.assign([TopicPartition(self._topic, p, OFFSET_BEGINNING) for p in targets])
            self._positions.update(dict.fromkeys(targets, -1))
            self._check_ready(targets)
            while not self._stopping.is_set():
                message = consumer.poll(0.5)
                if message is None:
                    self._check_positions(consumer, targets)
                    continue
                if message.error():
                    log.warning("endpoints topic: %s", message.error())
                    continue
                key = message.key()
                if key is not None:
                    self.apply(key.decode(), message.value())
                self._positions[message.partition()] = message.offset()
                if not self._ready.is_set():
                    self._check_ready(targets)
        finally:
            consumer.close()

    def _start_position(self, consumer: Consumer) -> dict[int, int]:
        """The end offset of every partition (the view is ready once it has read up to
        them), retried while the topic is missing or leaderless (right after creation,
        or while a broker fails over)."""
        delay = 0.2
        while True:
            try:
                return end_offsets(consumer, self._topic)
            except KafkaException as exc:
                if self._stopping.wait(delay):
                    raise
                log.warning("endpoints view waiting for %s: %s", self._topic, exc)
                delay = min(delay * 2, 5.0)

    def _check_positions(self, consumer: Consumer, targets: dict[int, int]) -> None:
        # When idle, the consumer's position tells how far each partition was read, also
        # past a final control record (transaction marker) that poll() never returns.
        for tp in consumer.position([TopicPartition(self._topic, p) for p in targets]):
            if tp.offset >= 0:
                self._positions[tp.partition] = max(self._positions[tp.partition],
                                                    tp.offset - 1)
        if not self._ready.is_set():
            self._check_ready(targets)

    def _check_ready(self, targets: dict[int, int]) -> None:
        if self._has_read_up_to(targets):
            self._ready.set()
            log.info("endpoints view ready with %d endpoints", len(self._endpoints))

    def _has_read_up_to(self, end_offsets: dict[int, int]) -> bool:
        # Compaction leaves holes, so "read up to" means the last offset applied is at or
        # past the end offset minus one (the high watermark is the *next* offset).
        return all(end == 0 or self._positions.get(p, -1) >= end - 1
                   for p, end in end_offsets.items())
