"""A replica's live view of the idempotency topic: a thread that follows it into a ledger.

The view reads every partition from the beginning (no consumer group: each replica
needs the whole ledger), reports ``ready`` once it has caught up with the high
watermarks it saw at start-up, and keeps following. A claimant registers its claim id
with :meth:`IdempotencyView.expect` *before* producing the claim; the future resolves
with the ledger's verdict when the follower applies that record, i.e. after every
earlier record of the partition.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from concurrent.futures import Future

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from services.ingest.idempotency_ledger import (
    ClaimOutcome,
    Entry,
    IdempotencyLedger,
    LedgerRecord,
    partition_for_tenant,
)
from webhooks.background import BackgroundWorker
from webhooks.kafka import poll_batch
from webhooks.settings import Settings

log = logging.getLogger(__name__)

PRUNE_EVERY = 60.0


def now_ms() -> int:
    """Wall-clock milliseconds, the unit of Kafka record timestamps."""
    return int(time.time() * 1000)


class IdempotencyView(BackgroundWorker):
    """The ledger of one replica, kept current by a follower thread.

    If the follower fails (the broker gone at start-up or mid-way), it rebuilds the
    ledger from the topic a second later; :meth:`stop` ends it and closes the consumer.
    """

    thread_name = "idempotency-view"
    stop_timeout = 10.0
    restart_pause = 1.0

    def __init__(self, settings: Settings, topic: str) -> None:
        super().__init__()
        self.topic = topic
        self._settings = settings
        self._ledger = IdempotencyLedger(window_ms=int(settings.idempotency_window * 1000))
        self._lock = threading.Lock()
        self._waiters: dict[str, Future[ClaimOutcome]] = {}
        self._ready = threading.Event()
        self._partitions = 0

    # -- readiness -------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """True once the ledger holds everything that was on the topic at start-up."""
        return self._ready.is_set()

    def wait_ready(self, timeout: float) -> bool:
        """Block until :attr:`ready` or ``timeout`` seconds; return :attr:`ready`."""
        return self._ready.wait(timeout)

    # -- claims ----------------------------------------------------------------------

    def partition_for(self, tenant: str) -> int:
        """The partition where ``tenant``'s claims go (valid once ready)."""
        return partition_for_tenant(tenant, self._partitions)

    def lookup(self, tenant: str, aliases: tuple[str, ...]) -> Entry | None:
        """What the ledger knows now about any of ``aliases``."""
        with self._lock:
            return self._ledger.lookup(tenant, aliases, now_ms())

    def expect(self, claim_id: str) -> Future[ClaimOutcome]:
        """A future for the verdict on ``claim_id``; register it before producing the claim."""
        future: Future[ClaimOutcome] = Future()
        with self._lock:
            self._waiters[claim_id] = future
        return future

    def forget(self, claim_id: str) -> None:
        """Drop a waiter whose claim was never written (the produce failed)."""
        with self._lock:
            self._waiters.pop(claim_id, None)

    # -- the follower ----------------------------------------------------------------

    def run(self) -> None:
        consumer = Consumer({
            **self._settings.kafka_client_config(),
            "group.id": f"{self._settings.topic_prefix}.ingest-view-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 10,
            "socket.connection.setup.timeout.ms": 3000,
        })
        try:
            metadata = consumer.list_topics(self.topic, timeout=5.0)
            topic = metadata.topics.get(self.topic)
            if topic is None or topic.error is not None or not topic.partitions:
                raise KafkaException(f"topic {self.topic} unavailable: "
                                     f"{topic.error if topic else 'missing'}")
            partitions = sorted(topic.partitions)
            pending = {}
            for number in partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(self.topic, number),
                                                           timeout=5.0)
                if high > low:
                    pending[number] = high
            with self._lock:
                # A rebuild starts from scratch so the ledger never applies a record twice,
                # and claims wait (not ready) until it has caught up again.
                self._ready.clear()
                self._ledger = IdempotencyLedger(self._ledger.window_ms)
                self._partitions = len(partitions)
            consumer.assign([TopicPartition(self.topic, n, OFFSET_BEGINNING) for n in partitions])
            if not pending:
                self._ready.set()
            last_prune = time.monotonic()
            while not self._stopping.is_set():
                for message in poll_batch(consumer, 500, 0.1):
                    if message.error():
                        log.warning("idempotency view: %s", message.error())
                        continue
                    self._apply(message.value(), message.timestamp()[1])
                    if pending.get(message.partition(), -1) <= message.offset() + 1:
                        pending.pop(message.partition(), None)
                if pending and self._caught_up(consumer, pending):
                    pending.clear()
                if not pending and not self._ready.is_set():
                    log.info("idempotency view ready: %d aliases", len(self._ledger))
                    self._ready.set()
                if time.monotonic() - last_prune > PRUNE_EVERY:
                    with self._lock:
                        self._ledger.prune(now_ms())
                    last_prune = time.monotonic()
        finally:
            consumer.close()

    def _caught_up(self, consumer: Consumer, pending: dict[int, int]) -> bool:
        """Compaction can leave the last offsets empty; trust positions over messages."""
        positions = consumer.position([TopicPartition(self.topic, n) for n in pending])
        return all(tp.offset >= pending[tp.partition] for tp in positions)

    def _apply(self, raw: bytes | None, timestamp_ms: int) -> None:
        if raw is None:
            return
        try:
            record = LedgerRecord.from_json(raw)
        except (ValueError, KeyError, TypeError):
            log.warning("idempotency view: skipping an unreadable record")
            return
        with self._lock:
            outcome = self._ledger.apply(record, timestamp_ms)
            waiter = self._waiters.pop(record.claim_id, None) if record.kind == "claim" else None
        if waiter is not None and not waiter.done():
            waiter.set_result(outcome)
