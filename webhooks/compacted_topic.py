"""Following a compacted topic from the beginning: the base of the services' views.

A view of a compacted topic (the fanout's endpoints, ingest's idempotency ledger) needs
the whole topic in every process, so :class:`CompactedTopicFollower` reads every
partition from the beginning with ``assign()`` (no consumer-group offsets: nothing is
committed, a restart re-reads the topic) and keeps following it. A subclass says only
how one record applies (:meth:`~CompactedTopicFollower.apply_record`) and how its state
starts over (:meth:`~CompactedTopicFollower.reset`); one that keeps its state across
restarts itself (ingest's idempotency index, on disk) says where it left off instead
(:meth:`~CompactedTopicFollower.resume`).

Caught up means every partition was read up to an end offset: :attr:`ready` for the end
offsets seen at start-up, :meth:`~CompactedTopicFollower.catch_up` for those at the time
of the call. Compaction leaves holes, and a transaction leaves a control record that
``poll()`` never returns, so "read up to" also trusts the consumer's position.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import ClassVar

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, TopicPartition

from webhooks.background import BackgroundWorker
from webhooks.kafka import KafkaConnection, create_consumer, end_offsets, poll_batch, watermarks

# Records applied per poll, at most; positions are checked between batches.
BATCH_SIZE = 500


class CompactedTopicFollower(BackgroundWorker):
    """Applies every record of ``topic``, from the beginning, in a background thread.

    If the thread fails for good (no ``restart_pause``), :meth:`wait_ready` raises the
    failure; with a ``restart_pause`` the follower resets and re-reads the topic.
    """

    thread_name = "compacted-topic-follower"
    # librdkafka's default; a view on a latency path asks for less.
    fetch_wait_ms: ClassVar[int] = 500
    # More consumer settings of a view (e.g. a smaller prefetch queue).
    consumer_overrides: ClassVar[dict[str, object]] = {}
    metadata_timeout: ClassVar[float] = 5.0

    def __init__(self, connection: KafkaConnection, topic: str) -> None:
        super().__init__()
        self.topic = topic
        self._connection = connection
        self._ready = threading.Event()
        self._positions: dict[int, int] = {}  # last offset read, per partition
        self._log = logging.getLogger(type(self).__module__)

    # -- what a view supplies --------------------------------------------------------

    def apply_record(self, key: bytes | None, value: bytes | None, timestamp_ms: int) -> None:
        """Apply one record (in the follower thread, in offset order per partition)."""
        raise NotImplementedError

    def apply_message(self, message: Message) -> None:
        """Apply one consumed message: :meth:`apply_record` of its key, value and time; a
        view that needs the partition and offset too overrides this instead."""
        self.apply_record(message.key(), message.value(), message.timestamp()[1])

    def reset(self, partitions: int) -> None:
        """Start over from an empty state: called on every (re)start, before the first
        record, with the topic's partition count. Nothing to do by default."""

    def resume(self, consumer: Consumer, watermarks: dict[int, tuple[int, int]]
               ) -> dict[int, int]:
        """Called on every (re)start, before the first record, with each partition's
        (low, high) watermarks: the last offset already applied per partition, from which
        reading goes on (a partition left out is read from its beginning). By default
        :meth:`reset`, and nothing applied."""
        self.reset(len(watermarks))
        return {}

    @property
    def read_up_to(self) -> dict[int, int]:
        """The last offset read (and applied) per partition; -1 before any."""
        return self._positions

    def after_poll(self) -> None:
        """Called in the follower thread after every poll, records or not (upkeep)."""

    # -- caught up? --------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """True once everything on the topic at start-up was applied."""
        return self._ready.is_set()

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until :attr:`ready` (True) or ``timeout`` seconds (False); raises
        RuntimeError as soon as the follower failed for good."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._ready.wait(0.1 if deadline is None
                                   else max(0.0, min(0.1, deadline - time.monotonic()))):
            if self.failure is not None:
                raise RuntimeError(f"{self.thread_name} failed") from self.failure
            if deadline is not None and time.monotonic() >= deadline:
                return False
        return True

    def catch_up(self, timeout: float) -> bool:
        """Block until every record written to the topic before this call was applied;
        False on timeout. A writer that derives a record from the view calls this first,
        so that it does not overwrite a change (or a delete) it has not seen."""
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
        consumer = create_consumer(self._connection, f"{self.thread_name}-check")
        try:
            return end_offsets(consumer, self.topic, timeout)
        finally:
            consumer.close()

    def _has_read_up_to(self, ends: dict[int, int]) -> bool:
        # The high watermark is the *next* offset: read up to it means the last offset
        # read is at or past it minus one (also across compaction holes).
        positions = self._positions
        return all(positions.get(p, -1) >= end - 1 for p, end in ends.items())

    # -- the follower thread -----------------------------------------------------------

    def run(self) -> None:
        # A group id is required by librdkafka even with assign(); nothing is committed.
        consumer = create_consumer(self._connection, f"{self.thread_name}.{uuid.uuid4().hex}", **{
            "enable.auto.offset.store": False,
            "fetch.wait.max.ms": self.fetch_wait_ms,
            "socket.connection.setup.timeout.ms": 3000,
            **self.consumer_overrides,
        })
        try:
            starts = self._start_offsets(consumer)
            if starts is None:
                return  # stopped while waiting for the topic
            self._ready.clear()
            applied = self.resume(consumer, starts)
            # Before the low watermark nothing is left to read (retention deleted it).
            self._positions = {p: max(low - 1, applied.get(p, -1))
                               for p, (low, _) in starts.items()}
            targets = {p: high for p, (_, high) in starts.items()}
            consumer.assign([TopicPartition(self.topic, p, self._positions[p] + 1 if p in applied
                                            else OFFSET_BEGINNING) for p in starts])
            self._check_ready(targets)
            while not self._stopping.is_set():
                self._follow(consumer, targets)
        finally:
            consumer.close()

    def _follow(self, consumer: Consumer, targets: dict[int, int]) -> None:
        messages = poll_batch(consumer, BATCH_SIZE, 0.1)
        for message in messages:
            if message.error():
                self._log.warning("%s: %s", self.topic, message.error())
                continue
            self.apply_message(message)
            self._positions[message.partition()] = message.offset()
        if not messages or not self._ready.is_set():
            self._read_positions(consumer)
        if not self._ready.is_set():
            self._check_ready(targets)
        self.after_poll()

    def _start_offsets(self, consumer: Consumer) -> dict[int, tuple[int, int]] | None:
        """Every partition's watermarks (ready once read up to the high ones), retried while
        the topic is missing or leaderless (right after creation, or while a broker fails
        over); None if stopped meanwhile."""
        delay = 0.2
        while True:
            try:
                return watermarks(consumer, self.topic, self.metadata_timeout)
            except KafkaException as exc:
                self._log.warning("%s waiting for %s: %s", self.thread_name, self.topic, exc)
            if self._stopping.wait(delay):
                return None
            delay = min(delay * 2, 5.0)

    def _read_positions(self, consumer: Consumer) -> None:
        # The consumer's position tells how far each partition was read, also past a final
        # control record (transaction marker) that poll() never returns.
        for tp in consumer.position([TopicPartition(self.topic, p) for p in self._positions]):
            if tp.offset >= 0:
                self._positions[tp.partition] = max(self._positions[tp.partition], tp.offset - 1)

    def _check_ready(self, targets: dict[int, int]) -> None:
        if self._has_read_up_to(targets):
            self._ready.set()
            self._log.info("%s ready: read %s up to its start-up end offsets",
                           self.thread_name, self.topic)
