"""Idempotency ledger at scale: one ingest process's memory and time to ready by entries.

``python -m benchmarks ledger_size``; the sizes come from ``WEBHOOKS_BENCH_LEDGER_ENTRIES``
(comma-separated entry counts, e.g. ``1000000,10000000,30000000``; default
:data:`DEFAULT_ENTRIES`, small enough for the default ``make bench`` run).

Setup: a generator writes the idempotency topic directly (confluent-kafka, lz4, as ingest's
producer does), the way fresh-id traffic at :data:`RATE` events/s fills it:
``accepted_batch`` records of :data:`EVENTS_PER_RECORD` events (50 ms of traffic; one
entry per event, its ``id:`` alias), and for :data:`KEYED_SHARE` of the events a ``claim``
with an ``Idempotency-Key`` followed by its ``accepted`` record (two entries: ``key:`` and
``id:``), over :data:`TENANTS` tenants; envelopes of ~300 bytes; record timestamps spread
over the time that traffic takes, ending now (nothing has expired). Then ``webhooks serve
ingest`` (one worker, Kafka intake off, so only the ledger loads) is started on that topic:

- ``ready_s``: from the process start to ``/healthz`` 200 (polled every 0.3 s);
- ``rss_mb`` / ``peak_rss_mb``: the process's resident memory once ready / its peak;
- ``bytes_per_entry``: (RSS once ready - RSS of the same process on an empty ledger) /
  entries;

and with the on-disk index (``WEBHOOKS_IDEMPOTENCY_DIR``), also

- ``restart_ready_s``: stopped (SIGTERM) and started again on the same directory;
- ``kill9_ready_s``: ``kill -9`` once ready, :data:`WRITTEN_WHILE_DOWN` more entries written
  meanwhile (a minute of traffic), started again: it reads only those;
- ``disk_bytes_per_entry``: the directory's size / entries;
- ``lookup_us``: one lookup of a known and of an unknown id in the index as it stands
  (in this process, after the service stopped), and ``apply_us_per_entry``: applying
  fresh acceptances (the follower's work per event).
"""

from __future__ import annotations

import os
import random
import shutil
import time
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Producer

from benchmarks.context import BenchContext
from services.ingest.idempotency_ledger import (
    AcceptedBatch,
    AcceptedEvent,
    IdempotencyLedger,
    partition_for_tenant,
)
from services.ingest.idempotency_store import opened_index
from services.localdev.service_process import ServiceProcess
from webhooks.settings import Settings
from webhooks.topics import Topics

ENTRIES_ENV = "WEBHOOKS_BENCH_LEDGER_ENTRIES"
DEFAULT_ENTRIES = (1_000_000,)
RATE = 1000  # events per second of the traffic the topic holds
EVENTS_PER_RECORD = 50  # 50 ms of that traffic per accepted_batch record
KEYED_SHARE = 0.05  # events sent with an Idempotency-Key (a claim and its acceptance)
TENANTS = 100
WRITTEN_WHILE_DOWN = 60 * RATE  # a minute of traffic while a killed pod restarts
LOOKUPS = 20_000
READY_TIMEOUT = 1800.0


def sizes() -> list[int]:
    """The entry counts to measure, from :data:`ENTRIES_ENV` or the default."""
    text = os.environ.get(ENTRIES_ENV, "")
    return sorted(int(n) for n in text.split(",") if n.strip()) or list(DEFAULT_ENTRIES)


def on_disk() -> bool:
    """True for the design with an on-disk index (a directory setting); the figures of the
    in-memory design before it were measured with this module on that code."""
    return "idempotency_dir" in Settings.model_fields


class LedgerWriter:
    """Writes realistic ledger records straight to the idempotency topic."""

    def __init__(self, settings: Settings, start_ms: int) -> None:
        self.topic = Topics.from_settings(settings).idempotency
        self.partitions = settings.topic_partitions
        self.producer = Producer({**settings.kafka.client_config(), "linger.ms": 50,
                                  "compression.type": "lz4", "batch.size": 1_000_000,
                                  "queue.buffering.max.kbytes": 262144})
        self.entries = 0
        self.events = 0
        self.clock_ms = start_ms  # the timestamp of the next record
        self.known: list[tuple[str, str]] = []  # (tenant, alias) samples for lookups
        self.random = random.Random(7)

    def envelope(self, tenant: str, event_id: str, n: int) -> str:
        created = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(self.clock_ms / 1000))
        return orjson.dumps({
            "id": event_id, "type": "order.created", "api_version": "2026-11-01",
            "created": f"{created}.{self.clock_ms % 1000:03d}000Z", "tenant": tenant,
            "data": {"object": {"id": f"order_{n:012d}", "amount": 4200 + n % 977,
                                "currency": "eur", "customer": f"cus_{n * 7919:016x}",
                                "status": "paid", "items": n % 7 + 1}}}).decode()

    def grow_to(self, entries: int) -> None:
        """Write records until the topic holds ``entries`` entries."""
        keyed_every = round(1 / KEYED_SHARE)
        while self.entries < entries:
            tenant = f"tenant-{self.random.randrange(TENANTS):03d}"
            partition = partition_for_tenant(tenant, self.partitions)
            events = []
            for _ in range(EVENTS_PER_RECORD):
                self.events += 1
                event_id = f"evt_{self.events:026d}"
                envelope = self.envelope(tenant, event_id, self.events)
                if self.events % keyed_every == 0:
                    key = f"order-{self.events}-created"
                    claim = {"kind": "claim", "claim_id": f"c{self.events:x}", "tenant": tenant,
                             "aliases": [f"key:{key}", f"id:{event_id}"], "envelope": envelope,
                             "supersedes": None}
                    record_key = f"{tenant}/c{self.events:x}".encode()
                    self.produce(orjson.dumps(claim), record_key, partition)
                    self.produce(orjson.dumps({**claim, "kind": "accepted"}), record_key,
                                 partition)
                    self.entries += 2
                else:
                    events.append(((f"id:{event_id}",), envelope))
                    self.entries += 1
                if self.random.random() < 0.001:
                    self.known.append((tenant, f"id:{event_id}"))
            batch_id = f"b{self.events:x}"
            self.produce(orjson.dumps({"kind": "accepted_batch", "batch_id": batch_id,
                                       "tenant": tenant, "events": events}),
                         f"{tenant}/{batch_id}".encode(), partition)
            self.clock_ms += EVENTS_PER_RECORD * 1000 // RATE
        self.flush()

    def produce(self, value: bytes, key: bytes, partition: int) -> None:
        while True:
            try:
                self.producer.produce(self.topic, value, key, partition=partition,
                                      timestamp=self.clock_ms)
                return
            except BufferError:
                self.producer.poll(0.1)

    def flush(self) -> None:
        if self.producer.flush(300) != 0:
            raise RuntimeError("Kafka did not acknowledge every ledger record")


def process_memory(pid: int) -> dict[str, float]:
    """Resident memory now and at its peak (MiB), from /proc."""
    fields = dict(line.split(":", 1) for line in
                  Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {"rss_mb": round(int(fields["VmRSS"].split()[0]) / 1024, 1),
            "peak_rss_mb": round(int(fields["VmHWM"].split()[0]) / 1024, 1)}


def start_ingest(settings: Settings, log: Path) -> tuple[ServiceProcess, float]:
    """``webhooks serve ingest`` until ready, and the seconds that took."""
    service = ServiceProcess("ingest", settings, log)
    started = time.monotonic()
    service.start(timeout=READY_TIMEOUT)
    return service, round(time.monotonic() - started, 2)


def directory_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def run(context: BenchContext) -> dict[str, Any]:
    """Grow the ledger topic through each size; start ingest on it and measure."""
    overrides: dict[str, Any] = {"ingest_kafka_intake": False, "log_level": "warning"}
    index_dir = context.work_dir / "idempotency"
    if on_disk():
        overrides["idempotency_dir"] = index_dir
    settings = context.settings(**overrides)
    wanted = sizes()
    span_ms = (max(wanted) + WRITTEN_WHILE_DOWN) * 1000 // RATE
    writer = LedgerWriter(settings, start_ms=int(time.time() * 1000) - span_ms)
    log = context.work_dir / "ledger-size-ingest.log"

    service, ready_empty = start_ingest(settings, log)
    empty = process_memory(service.process.pid)  # type: ignore[union-attr]
    service.stop()
    report: dict[str, Any] = {
        "setup": (f"one ingest process (1 worker, intake off) on a local broker; ledger "
                  f"topic written directly: accepted_batch records of {EVENTS_PER_RECORD} "
                  f"events, {KEYED_SHARE:.0%} of events keyed (claim + accepted, 2 entries), "
                  f"{TENANTS} tenants, {settings.topic_partitions} partitions, ~300-byte "
                  f"envelopes, timestamps at {RATE}/s ending now"),
        "design": "on-disk index" if on_disk() else "in-memory ledger",
        "empty": {"ready_s": ready_empty, **empty},
        "sizes": {},
    }
    for size in wanted:
        written = time.monotonic()
        writer.grow_to(size)
        row: dict[str, Any] = {"entries": writer.entries, "kafka_records_written_s":
                               round(time.monotonic() - written, 1)}
        if on_disk():
            shutil.rmtree(index_dir, ignore_errors=True)  # cold: rebuilt from the topic
        service, row["ready_s"] = start_ingest(settings, log)
        row.update(process_memory(service.process.pid))  # type: ignore[union-attr]
        row["bytes_per_entry"] = round((row["rss_mb"] - empty["rss_mb"]) * 2**20
                                       / writer.entries)
        if on_disk():
            service.stop()
            row["disk_bytes_per_entry"] = round(directory_bytes(index_dir) / writer.entries)
            service, row["restart_ready_s"] = start_ingest(settings, log)
            row["restart"] = process_memory(service.process.pid)  # type: ignore[union-attr]
            service.kill()
            writer.grow_to(writer.entries + WRITTEN_WHILE_DOWN)
            service, row["kill9_ready_s"] = start_ingest(settings, log)
            row["kill9_restart"] = process_memory(service.process.pid)  # type: ignore[union-attr]
            row["kill9_written_while_down"] = WRITTEN_WHILE_DOWN
            service.stop()
            row.update(hot_path_cost(settings, writer))
        else:
            service.stop()
        report["sizes"][str(size)] = row
        print(row, flush=True)
    return report


def hot_path_cost(settings: Settings, writer: LedgerWriter) -> dict[str, Any]:
    """Lookups (a known and an unknown id) and fresh acceptances on the index as it stands,
    timed in this process after the service stopped."""
    window_ms = int(settings.idempotency_window * 1000)
    topic = Topics.from_settings(settings).idempotency
    with opened_index(settings.idempotency_dir, topic, window_ms) as entries:
        ledger = IdempotencyLedger(window_ms, entries)
        now = int(time.time() * 1000)
        known = writer.known[:LOOKUPS] or [("tenant-000", "id:none")]
        started = time.perf_counter()
        for n in range(LOOKUPS):
            tenant, alias = known[n % len(known)]
            ledger.lookup(tenant, (alias,), now)
        hit_us = (time.perf_counter() - started) / LOOKUPS * 1e6
        started = time.perf_counter()
        for n in range(LOOKUPS):
            ledger.lookup("tenant-001", (f"id:evt_missing{n}",), now)
        miss_us = (time.perf_counter() - started) / LOOKUPS * 1e6
        events = [AcceptedEvent((f"id:evt_new{n}",), writer.envelope("tenant-002", "x", n))
                  for n in range(LOOKUPS)]
        started = time.perf_counter()
        for first in range(0, LOOKUPS, EVENTS_PER_RECORD):
            [batch] = AcceptedBatch.of("tenant-002", events[first:first + EVENTS_PER_RECORD])
            ledger.apply_batch(batch, now)
        entries.commit(None)
        apply_us = (time.perf_counter() - started) / LOOKUPS * 1e6
    return {"lookup_us": {"known": round(hit_us, 2), "unknown": round(miss_us, 2)},
            "apply_us_per_entry": round(apply_us, 2)}
