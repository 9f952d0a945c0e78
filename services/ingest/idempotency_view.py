"""A replica's live view of the idempotency topic: a thread that follows it into a ledger.

The view follows every partition (each replica needs the whole ledger:
:class:`~webhooks.compacted_topic.CompactedTopicFollower`) into an index on local disk
(:mod:`services.ingest.idempotency_store`) that keeps the offsets it covers, so it
starts where the index left off (from the beginning on a new or unusable index),
reports ``ready`` once it has caught up with the high watermarks it saw at start-up, and
keeps following; a failure resumes from the stored offsets a second later. A claimant
registers its claim id with :meth:`IdempotencyView.expect` *before* producing the claim;
the future resolves with the ledger's verdict when the follower applies that record,
i.e. after every earlier record of the partition.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future
from pathlib import Path

from confluent_kafka import Consumer, Message, TopicCollection
from prometheus_client import Counter

from services.ingest.idempotency_ledger import (
    AcceptedBatch,
    AcceptedEvent,
    ClaimOutcome,
    Entry,
    IdempotencyLedger,
    decode_record,
    partition_for_tenant,
)
from services.ingest.idempotency_store import DiskEntries, IndexDirectory, TopicIdentity
from webhooks.compacted_topic import CompactedTopicFollower
from webhooks.kafka import KafkaConnection, create_admin

log = logging.getLogger(__name__)

PRUNE_EVERY = 60.0


def now_ms() -> int:
    """Wall-clock milliseconds, the unit of Kafka record timestamps."""
    return int(time.time() * 1000)


class IdempotencyView(CompactedTopicFollower):
    """The ledger of one replica, kept current by a follower thread.

    If the follower fails (the broker gone at start-up or mid-way), it resumes from the
    index's stored offsets a second later; :meth:`stop` ends it, closes the consumer and
    the index. ``window`` is how long (seconds) a key or event id is remembered;
    ``index_root`` the directory under which this process takes its own index
    (``WEBHOOKS_IDEMPOTENCY_DIR``); ``records_read`` counts the records applied.
    """

    thread_name = "idempotency-view"
    stop_timeout = 10.0
    restart_pause = 1.0
    # While an index is built, librdkafka prefetches up to 64 MiB by default: memory the
    # process does not need to keep the follower busy (one poll applies ~5 MB).
    consumer_overrides = {"queued.max.messages.kbytes": 16384}
    # A claim waits until this follower reads it back, yet the follower keeps librdkafka's
    # fetch wait (500 ms): the broker answers a waiting fetch as soon as a record arrives.
    # A 10 ms wait measured the same claim latency (p50 11 ms) and doubled the idle
    # broker's CPU with 100 empty fetches a second per replica.

    def __init__(self, connection: KafkaConnection, topic: str, window: float,
                 index_root: Path, records_read: Counter | None = None) -> None:
        super().__init__(connection, topic)
        self._window_ms = int(window * 1000)
        self._index_root = index_root
        self._directory: IndexDirectory | None = None
        self._entries: DiskEntries | None = None
        self._ledger: IdempotencyLedger | None = None
        self._lock = threading.Lock()
        self._waiters: dict[str, Future[ClaimOutcome]] = {}
        self._partitions = 0
        self._last_prune = time.monotonic()
        self._records_read = records_read
        self._read_since_poll = 0
        self._committed: dict[int, int] = {}

    # -- claims ----------------------------------------------------------------------

    def partition_for(self, tenant: str) -> int:
        """The partition where ``tenant``'s claims go (valid once ready)."""
        return partition_for_tenant(tenant, self._partitions)

    def lookup(self, tenant: str, aliases: tuple[str, ...]) -> Entry | None:
        """What the ledger knows now about any of ``aliases``."""
        with self._lock:
            if self._ledger is None:
                return None
            return self._ledger.lookup(tenant, aliases, now_ms())

    def expect(self, claim_id: str) -> Future[ClaimOutcome]:
        """A future for the verdict on ``claim_id``; register it before producing the claim."""
        future: Future[ClaimOutcome] = Future()
        with self._lock:
            self._waiters[claim_id] = future
        return future

    def accept_locally(self, tenant: str, events: list[AcceptedEvent]) -> None:
        """Apply fresh acceptances of this replica now, ahead of their ledger record
        (written a moment later, see :class:`~services.ingest.pipeline.FreshAcceptances`),
        so that a repeat reaching this replica meanwhile is replayed. They stay in memory
        until that record is applied (see :class:`IdempotencyLedger`)."""
        with self._lock:
            if self._ledger is not None:
                self._ledger.accept_locally(tenant, events, now_ms())

    def forget(self, claim_id: str) -> None:
        """Drop a waiter whose claim was never written (the produce failed)."""
        with self._lock:
            self._waiters.pop(claim_id, None)

    def index_memory(self) -> dict[str, int]:
        """The index's cache and memtable bytes (empty until it is open)."""
        entries = self._entries  # RocksDB's usage counters are safe to read without the lock
        return entries.memory() if entries is not None else {}

    # -- the index -------------------------------------------------------------------

    def resume(self, consumer: Consumer, watermarks: dict[int, tuple[int, int]]
               ) -> dict[int, int]:
        """Open this process's index (once) and say where it left off; start it over if
        it follows another topic (or cluster, or partition count), or its offsets lie
        past the topic's end (the topic was re-created)."""
        identity = self._identity(consumer, len(watermarks))
        with self._lock:
            if self._entries is None:
                self._directory = IndexDirectory.claim(self._index_root, self.topic)
                self._entries = DiskEntries(self._directory.database, self._window_ms)
                self._ledger = IdempotencyLedger(self._window_ms, self._entries)
            else:  # a restart after a failure: what was applied but not stored goes
                self._entries.discard_pending()
            entries = self._entries
            stored = entries.offsets() if entries.matches(identity) else None
            if stored is not None and any(offset >= watermarks[p][1]
                                          for p, offset in stored.items() if p in watermarks):
                stored = None
            if stored is None:
                log.info("idempotency index %s: rebuilding from %s (new, or built from "
                         "another topic, cluster or partition count)", entries.path, self.topic)
                entries.start_over(identity)
                stored = {}
            self._partitions = len(watermarks)
            self._committed = dict(stored)
        log.info("idempotency view: resuming %s after offsets %s", self.topic, stored or "none")
        return stored

    def _identity(self, consumer: Consumer, partitions: int) -> TopicIdentity:
        """The topic as the cluster knows it now: a re-created topic has a new id."""
        cluster_id = consumer.list_topics(self.topic, timeout=self.metadata_timeout).cluster_id
        admin = create_admin(self._connection)
        [future] = admin.describe_topics(TopicCollection([self.topic]),
                                         request_timeout=self.metadata_timeout).values()
        topic_id = str(future.result(self.metadata_timeout).topic_id)
        return TopicIdentity(self.topic, cluster_id or "", topic_id, partitions)

    def after_poll(self) -> None:
        """Store what this poll applied with the offsets it covers (one atomic write), and
        forget entries older than the window once a minute."""
        with self._lock:
            if self._entries is None:
                return
            positions = {p: offset for p, offset in self.read_up_to.items() if offset >= 0}
            if positions != self._committed:
                self._entries.commit(positions)
                self._committed = positions
            if time.monotonic() - self._last_prune > PRUNE_EVERY and self._ledger is not None:
                self._ledger.prune(now_ms())
                self._last_prune = time.monotonic()
        if self._read_since_poll and self._records_read is not None:
            self._records_read.inc(self._read_since_poll)  # one increment per poll, not per record
        self._read_since_poll = 0

    def stop(self, timeout: float | None = None) -> None:
        """Stop following, then close the index and give its directory back."""
        super().stop(timeout)
        with self._lock:
            if self._entries is not None and not self.alive:
                self._entries.close()
                self._entries = self._ledger = None
                if self._directory is not None:
                    self._directory.release()
                    self._directory = None

    # -- the follower ----------------------------------------------------------------

    def apply_message(self, message: Message) -> None:
        self._read_since_poll += 1
        super().apply_message(message)

    def apply_record(self, key: bytes | None, value: bytes | None, timestamp_ms: int) -> None:
        """Apply one ledger record; a claim's verdict resolves its waiter, if any."""
        if value is None:
            return
        try:
            record = decode_record(value)
        except (ValueError, KeyError, TypeError):
            log.warning("idempotency view: skipping an unreadable record")
            return
        if isinstance(record, AcceptedBatch):
            with self._lock:
                assert self._ledger is not None
                self._ledger.apply_batch(record, timestamp_ms)
            return
        with self._lock:
            assert self._ledger is not None
            outcome = self._ledger.apply(record, timestamp_ms)
            waiter = self._waiters.pop(record.claim_id, None) if record.kind == "claim" else None
        if waiter is not None and not waiter.done():
            waiter.set_result(outcome)
