"""The eventlog sink: events, attempts, endpoint records and dead-lettered delivery tasks
from Kafka into ClickHouse.

One consumer group reads the four topics and writes size/time-bounded batches:

1. insert the batch's rows (``events``, ``attempts``, ``endpoints``, ``dlq``), each table
   in one INSERT, every partition's rows in offset order;
2. insert, per topic partition, the next offset to read into ``sink_positions`` — the
   visibility watermark: the API serves only rows below it, so a reader never sees a
   row while an earlier offset of its partition is still on its way;
3. commit the offsets to Kafka.

Steps 1 and 2 run in a writer thread, one batch at a time and in order, while the
consumer thread reads and decodes the next batch (ClickHouse works outside the GIL, so
the two overlap); the consumer thread commits once the batch is written (a commit from
another thread waits for the consumer's next poll).

A crash anywhere re-reads from the last commit. Events the log already holds (by tenant
and id) are not inserted again, so neither a re-read batch nor the same event appended
twice to the topic shows twice; likewise dead tasks by (tenant, task id), since a fanout
that crashed before committing may dead-letter a task again. Attempts and endpoints
re-insert with the same (partition, offset) keys, which ReplacingMergeTree collapses and
the queries skip before merges. Nothing acknowledged is lost.
If an insert fails, the consumer seeks back to the batch's first offsets and tries again.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from clickhouse_connect.driver.client import Client
from confluent_kafka import (
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)
from prometheus_client import Counter

from services.eventlog.clickhouse import create_clickhouse_client
from webhooks.background import BackgroundWorker
from webhooks.delivery import AttemptRecord, DeliveryTask, HeaderPairs
from webhooks.envelope import Envelope, utcnow
from webhooks.kafka import create_consumer
from webhooks.settings import Settings
from webhooks.topics import Topics

log = logging.getLogger(__name__)

SINK_GROUP = "eventlog-sink"
EVENT_COLUMNS = ["tenant", "kafka_partition", "kafka_offset", "id", "type", "api_version",
                 "created", "envelope"]
ATTEMPT_COLUMNS = ["tenant", "endpoint_id", "kafka_partition", "kafka_offset", "id", "task_id",
                   "event_id", "event_type", "attempt", "trigger", "url", "status",
                   "response_status", "response_body", "error", "latency_ms", "timestamp",
                   "next_attempt_at", "outcome", "request_headers", "response_headers",
                   "response_headers_truncated"]
ENDPOINT_COLUMNS = ["id", "kafka_partition", "kafka_offset", "tenant", "deleted", "record"]
DLQ_COLUMNS = ["tenant", "kafka_partition", "kafka_offset", "task_id", "endpoint_id",
               "event_id", "event_type", "attempts", "reason", "last_error",
               "last_response_status", "dead_lettered_at", "task"]
POSITION_COLUMNS = ["topic", "kafka_partition", "next_offset"]

DUPLICATE_WINDOW_SECONDS = 3600
"""How far back the sink looks for an event id it is about to insert again."""
_PLAIN_ID = re.compile(r"[0-9A-Za-z_-]+")
"""An event id that can go into a SQL string literal as it is (the envelope's alphabet)."""
_PLAIN_IDS = re.compile(r"[0-9A-Za-z_,-]*")
IDLE_POLL = 0.2
"""Seconds the loop waits for records while it holds none (then checks for a stop)."""
FETCH_MIN_BYTES = 65536
FETCH_WAIT_MS = 100
"""The broker answers the sink's fetch once it has this much data for it or after this
long: the sink writes in batches anyway, and a fetch per record or two (librdkafka's
default under a steady trickle) costs the broker a request each."""

SINK_ROWS = Counter("eventlog_sink_rows_total", "Rows written to ClickHouse", ["table"])
SINK_SKIPPED = Counter("eventlog_sink_skipped_total",
                       "Kafka records the sink could not decode (logged, left on the topic)",
                       ["topic"])
SINK_DUPLICATES = Counter("eventlog_sink_duplicate_events_total",
                          "Events not inserted because the log already holds their id")
SINK_DUPLICATE_DEAD = Counter("eventlog_sink_duplicate_dead_tasks_total",
                              "Dead tasks not inserted because the DLQ table holds their id")
SINK_FAILURES = Counter("eventlog_sink_insert_failures_total",
                        "Batches whose insert failed and were re-read")


@dataclass
class Batch:
    """Records read since the last flush, as rows per table plus Kafka positions."""

    events: list[list[Any]] = field(default_factory=list)
    attempts: list[list[Any]] = field(default_factory=list)
    endpoints: list[list[Any]] = field(default_factory=list)
    dead: list[list[Any]] = field(default_factory=list)
    first: dict[tuple[str, int], int] = field(default_factory=dict)
    last: dict[tuple[str, int], int] = field(default_factory=dict)
    size: int = 0
    started: float = 0.0

    def track(self, message: Message) -> None:
        where = (message.topic(), message.partition())
        self.first.setdefault(where, message.offset())
        self.last[where] = message.offset()
        if not self.size:
            self.started = time.monotonic()
        self.size += 1


def _event_row(message: Message) -> list[Any]:
    raw = message.value()
    event = Envelope.from_json(raw)
    return [event.tenant, message.partition(), message.offset(), event.id, event.type,
            event.api_version, event.created, raw.decode()]


def _attempt_row(message: Message) -> list[Any]:
    a = AttemptRecord.from_json(message.value())
    return [a.tenant, a.endpoint_id, message.partition(), message.offset(), a.id, a.task_id,
            a.event_id, a.event_type, a.attempt, a.trigger, a.url, a.status, a.response_status,
            a.response_body, a.error, a.latency_ms, a.timestamp, a.next_attempt_at, a.outcome,
            _json_text(a.request_headers), _json_text(a.response_headers),
            a.response_headers_truncated]


def _json_text(headers: HeaderPairs | None) -> str:
    """Header pairs as the ``attempts`` table keeps them: JSON text, '' for none."""
    return "" if headers is None else orjson.dumps(headers).decode()


def _endpoint_row(message: Message) -> list[Any]:
    endpoint_id = (message.key() or b"").decode()
    raw = message.value()
    if raw is None:  # tombstone: the endpoint was deleted
        return [endpoint_id, message.partition(), message.offset(), "", 1, ""]
    document = json.loads(raw)
    return [endpoint_id or document["id"], message.partition(), message.offset(),
            document["tenant"], 0, raw.decode()]


def _dead_task_row(message: Message) -> list[Any]:
    raw = message.value()
    task = DeliveryTask.from_json(raw)
    last = task.history[-1] if task.history else None
    kind, millis = message.timestamp()
    # The record's timestamp is when the fanout dead-lettered the task; without one
    # (never with the platform's producers) the last attempt is the closest we know.
    if kind != TIMESTAMP_NOT_AVAILABLE and millis > 0:
        dead_lettered_at = datetime.fromtimestamp(millis / 1000, UTC)
    else:
        dead_lettered_at = last.timestamp if last is not None else utcnow()
    return [task.tenant, message.partition(), message.offset(), task.task_id,
            task.endpoint_id, task.event.id, task.event.type, len(task.history),
            task.dlq_reason or "", last.error if last else None,
            last.response_status if last else None, dead_lettered_at, raw.decode()]


def _id_literal(ids: list[str]) -> tuple[str, list[str]]:
    """``ids`` as one comma-separated SQL string literal, and apart those that cannot be
    written so (characters outside the envelope schema's, in a record nobody checked).

    Why not one bound ``Array(String)`` parameter for all: formatting it in Python and
    parsing it in ClickHouse took ~6 us per id, a third of the sink's time; a literal
    that ClickHouse splits costs a fraction of that.
    """
    joined = ",".join(ids)
    if _PLAIN_IDS.fullmatch(joined) and joined.count(",") == len(ids) - 1:
        return joined, []  # the usual case, checked in one pass
    return (",".join(i for i in ids if _PLAIN_ID.fullmatch(i)),
            [i for i in ids if not _PLAIN_ID.fullmatch(i)])


class EventLogSink(BackgroundWorker):
    """Runs the consume → insert → commit loop in a background thread.

    :meth:`stop` flushes what was read, commits, leaves the group and ends the thread.
    An unexpected error ends it too, kept in :attr:`failure` for ``/healthz`` (which
    watches :attr:`alive`).
    """

    thread_name = "eventlog-sink"
    stop_timeout = 30.0

    def __init__(self, settings: Settings, client: Client | None = None,
                 group: str = SINK_GROUP, erased: Callable[[str], bool] | None = None) -> None:
        """``erased`` tells whether a tenant was erased: its rows are dropped, not written."""
        super().__init__()
        self.erased = erased
        self.settings = settings
        self.topics = Topics.from_settings(settings)
        self.client = client or create_clickhouse_client(settings.clickhouse_url)
        self.group = group
        self._rows: dict[str, Callable[[Message], list[Any]]] = {
            self.topics.events: _event_row,
            self.topics.attempts: _attempt_row,
            self.topics.endpoints: _endpoint_row,
            self.topics.dlq: _dead_task_row,
        }
        self._consumer: Consumer | None = None
        self._batch = Batch()
        # ClickHouse works outside the GIL: one writer thread inserts a batch while this
        # thread reads and decodes the next (at most one batch in each hand).
        self._writer = ThreadPoolExecutor(max_workers=1,
                                          thread_name_prefix=f"{self.thread_name}-writer")
        self._writing: tuple[Batch, Future[bool]] | None = None

    # -- the loop --------------------------------------------------------------------

    def run(self) -> None:
        consumer = create_consumer(self.settings.kafka, self.group, **{
            "enable.partition.eof": False, "fetch.min.bytes": FETCH_MIN_BYTES,
            "fetch.wait.max.ms": FETCH_WAIT_MS})
        self._consumer = consumer
        consumer.subscribe(list(self._rows), on_revoke=self._on_revoke)
        try:
            while not self._stopping.is_set():
                wanted = max(1, self.settings.sink_batch_size - self._batch.size)
                # consume() waits its whole timeout unless the batch fills: a partial batch
                # waits only until its deadline, so no record waits longer than the setting.
                timeout = IDLE_POLL
                if self._batch.size:
                    timeout = max(0.0, min(IDLE_POLL, self._batch.started
                                           + self.settings.sink_batch_wait - time.monotonic()))
                for message in consumer.consume(num_messages=min(wanted, 10000), timeout=timeout):
                    self._add(message)
                if self._writing is not None and self._writing[1].done():
                    self._settle(consumer)  # commits it: only this thread may use the consumer
                if self._batch.size and (
                    self._batch.size >= self.settings.sink_batch_size
                    or time.monotonic() - self._batch.started >= self.settings.sink_batch_wait
                ):
                    self._hand_over(consumer)
            self._drain(consumer)
        finally:
            self._writer.shutdown(wait=True)
            consumer.close()  # auto-commit is off: closing commits nothing on its own

    def _add(self, message: Message) -> None:
        if message.error():
            if message.error().code() != KafkaError._PARTITION_EOF:
                log.warning("sink consumer error: %s", message.error())
            return
        topic = message.topic()
        self._batch.track(message)
        try:
            row = self._rows[topic](message)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            # Undecodable records stay on the topic; we log and count them, never guess.
            SINK_SKIPPED.labels(topic=topic).inc()
            log.error("skipping undecodable record %s[%s]@%s: %s", topic, message.partition(),
                      message.offset(), exc)
            return
        if topic == self.topics.events:
            self._batch.events.append(row)
        elif topic == self.topics.attempts:
            self._batch.attempts.append(row)
        elif topic == self.topics.dlq:
            self._batch.dead.append(row)
        else:
            self._batch.endpoints.append(row)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Write and commit what we hold before another member takes these partitions.
        self._drain(consumer)

    def _hand_over(self, consumer: Consumer) -> None:
        """Give the batch read so far to the writer thread, once it finished the previous
        one; if that one failed, this batch is dropped and both are read again."""
        batch, self._batch = self._batch, Batch()
        if self._settle(consumer, read_since=batch):
            self._writing = (batch, self._writer.submit(self._write, batch))

    def _drain(self, consumer: Consumer) -> None:
        """Write and commit everything read so far, and wait for it (revoke, stop)."""
        if self._batch.size:
            self._hand_over(consumer)
        self._settle(consumer)

    def _settle(self, consumer: Consumer, read_since: Batch | None = None) -> bool:
        """Wait for the batch being written and commit it; False if its insert failed,
        after seeking back to it (and to ``read_since``, read meanwhile, which the caller
        then drops)."""
        if self._writing is None:
            return True
        written, outcome = self._writing
        self._writing = None
        if outcome.result():
            self.commit(consumer, written)
            return True
        first = dict(read_since.first) if read_since else {}
        first.update(written.first)  # the earlier batch's offsets come first
        for (topic, partition), offset in first.items():
            try:
                consumer.seek(TopicPartition(topic, partition, offset))
            except KafkaException as exc:  # partition no longer ours: its new owner reads it
                log.warning("cannot seek %s[%s]: %s", topic, partition, exc)
        self._stopping.wait(1.0)
        return False

    def _write(self, batch: Batch) -> bool:
        """In the writer thread: insert the batch; False if that failed."""
        try:
            self.write(batch)
        except Exception:
            SINK_FAILURES.inc()
            log.exception("ClickHouse insert failed; re-reading %d records", batch.size)
            return False
        return True

    def write(self, batch: Batch) -> None:
        """Insert the batch's rows, then advance the visibility watermarks."""
        if self.erased is not None:
            self._drop_erased(batch)
        for table, rows, columns in (("events", self._unseen(batch.events), EVENT_COLUMNS),
                                     ("attempts", batch.attempts, ATTEMPT_COLUMNS),
                                     ("endpoints", batch.endpoints, ENDPOINT_COLUMNS),
                                     ("dlq", self._unseen_dead(batch.dead), DLQ_COLUMNS)):
            if rows:
                self.client.insert(table, rows, column_names=columns)
                SINK_ROWS.labels(table=table).inc(len(rows))
        positions = [[topic, partition, offset + 1]
                     for (topic, partition), offset in sorted(batch.last.items())]
        self.client.insert("sink_positions", positions, column_names=POSITION_COLUMNS)

    def _drop_erased(self, batch: Batch) -> None:
        """Leave out the rows of erased tenants (records still in flight when erased)."""
        erased = self.erased
        assert erased is not None
        batch.events = [row for row in batch.events if not erased(row[0])]
        batch.attempts = [row for row in batch.attempts if not erased(row[0])]
        batch.dead = [row for row in batch.dead if not erased(row[0])]
        batch.endpoints = [row for row in batch.endpoints if not erased(row[3])]

    def _unseen(self, events: list[list[Any]]) -> list[list[Any]]:
        """The event rows whose (tenant, id) the log does not hold yet, first one kept.

        The same event id can reach the topic twice: a producer retrying outside ingest's
        idempotency, ingest re-appending a claim after a crash, or this sink re-reading a
        batch it inserted before it crashed. Readers page by Kafka position, so a second
        copy at a later offset would be served twice; the first copy is the event.
        Only ids stored within ``DUPLICATE_WINDOW_SECONDS`` are looked up (an index on
        ``inserted`` keeps that cheap); a re-read older than that has the same Kafka
        position as its first insert, which ReplacingMergeTree and the queries collapse.
        """
        if not events:
            return events
        first: dict[tuple[str, str], list[Any]] = {}
        for row in events:
            first.setdefault((row[0], row[3]), row)
        ids, odd = _id_literal([event_id for _, event_id in first])
        known = self.client.query(
            "SELECT DISTINCT tenant, id FROM events "
            f"WHERE (id IN splitByChar(',', '{ids}') OR id IN {{odd:Array(String)}}) "
            f"AND inserted > now64(3) - INTERVAL {DUPLICATE_WINDOW_SECONDS} SECOND",
            parameters={"odd": odd}).result_rows
        for key in known:
            first.pop(tuple(key), None)
        if skipped := len(events) - len(first):
            SINK_DUPLICATES.inc(skipped)
            log.info("skipped %d events whose id the log already holds", skipped)
        return list(first.values())

    def _unseen_dead(self, dead: list[list[Any]]) -> list[list[Any]]:
        """The dead task rows whose (tenant, task id) the DLQ table does not hold yet.

        A fanout worker that crashed after dead-lettering a task but before committing
        reads the task's retry record again and dead-letters it once more (same task id,
        later offset); the DLQ listing shows it once. The DLQ is small and the lookup
        goes through the ``task_id`` bloom filter index, so no time window is needed.
        """
        if not dead:
            return dead
        first: dict[tuple[str, str], list[Any]] = {}
        for row in dead:
            first.setdefault((row[0], row[3]), row)
        known = self.client.query(
            "SELECT DISTINCT tenant, task_id FROM dlq "
            "WHERE tenant IN {tenants:Array(String)} AND task_id IN {ids:Array(String)}",
            parameters={"tenants": sorted({tenant for tenant, _ in first}),
                        "ids": [task_id for _, task_id in first]}).result_rows
        for key in known:
            first.pop(tuple(key), None)
        if skipped := len(dead) - len(first):
            SINK_DUPLICATE_DEAD.inc(skipped)
            log.info("skipped %d dead tasks the DLQ table already holds", skipped)
        return list(first.values())

    def commit(self, consumer: Consumer, batch: Batch) -> None:
        """Commit the batch's offsets; a failure only means those records are re-read."""
        offsets = [TopicPartition(topic, partition, offset + 1)
                   for (topic, partition), offset in batch.last.items()]
        try:
            consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            log.warning("offset commit failed (records will be re-read, harmlessly): %s", exc)
