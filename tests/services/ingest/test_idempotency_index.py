"""Ingest's on-disk idempotency index: it resumes where it left off, rebuilds when it
cannot be trusted, and a ``kill -9`` never leaves its offsets ahead of its entries.

Real broker; the kill test kills a real ``webhooks serve ingest`` process.
"""

from __future__ import annotations

import contextlib
import json
import re
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Message
from fastapi.testclient import TestClient

from services.ingest.idempotency_ledger import (
    AcceptedBatch,
    AcceptedEvent,
    LedgerRecord,
    decode_record,
    partition_for_tenant,
)
from services.ingest.idempotency_store import IndexDirectory, TopicIdentity, opened_index
from services.localdev.service_process import ServiceProcess
from tests.services.ingest.conftest import ACME, running_ingest
from tests.support.eventlog import eventually
from tests.support.kafka import read_to_end
from webhooks.kafka import create_producer
from webhooks.settings import Settings
from webhooks.topics import Topics

RECORDS_READ = "webhooks_ingest_ledger_records_read_total"


def records_read(metrics_text: str) -> float:
    """The replica's count of ledger records applied since it started."""
    for line in metrics_text.splitlines():
        if line.startswith(f"{RECORDS_READ} "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def envelope(event_id: str, n: int = 0) -> str:
    return json.dumps({"id": event_id, "type": "order.loaded", "api_version": "2026-11-01",
                       "created": "2026-12-05T10:00:00.000000Z", "tenant": "acme",
                       "data": {"object": {"n": n}}}, separators=(",", ":"))


def write_ledger(settings: Settings, records: list[LedgerRecord | AcceptedBatch]) -> None:
    """Records straight onto the idempotency topic, as other replicas would write them."""
    topic = Topics.from_settings(settings).idempotency
    producer = create_producer(settings.kafka, **{"linger.ms": 20})
    partition = partition_for_tenant("acme", settings.topic_partitions)
    for record in records:
        while True:
            try:
                producer.produce(topic, record.to_json(), record.key(), partition=partition)
                break
            except BufferError:
                producer.poll(0.1)
    assert producer.flush(60) == 0, "Kafka did not acknowledge every ledger record"


def post_id(client: TestClient | ServiceProcess, event_id: str) -> tuple[int, dict]:
    body = {"type": "order.again", "data": {}, "id": event_id}
    if isinstance(client, ServiceProcess):
        import httpx

        response = httpx.post(f"{client.url}/v1/events", json=body, headers=ACME, timeout=10)
    else:
        response = client.post("/v1/events", json=body, headers=ACME)
    return response.status_code, response.json()


def index_path(settings: Settings) -> Path:
    return settings.idempotency_dir / Topics.from_settings(settings).idempotency / "0"


def test_a_restart_reads_only_the_records_written_since(settings: Settings) -> None:
    mark = uuid.uuid4().hex
    ids = [f"evt_r{n}{mark}" for n in range(10)]
    with running_ingest(settings) as first:
        originals = {event_id: post_id(first, event_id) for event_id in ids}
        assert {status for status, _ in originals.values()} == {202}
        assert first.app.state.runtime.view.catch_up(10)
        metrics_text = first.get("/metrics").text
        assert records_read(metrics_text) > 0
        # The index's bounded budgets are exported: the entries just written sit in memtables.
        memtables = re.search(r'^webhooks_ingest_index_memory_bytes\{part="memtables"\} (\S+)$',
                              metrics_text, re.M)
        assert memtables and float(memtables[1]) > 0, metrics_text
        assert 'webhooks_ingest_index_memory_bytes{part="block_cache"}' in metrics_text

    later = [f"evt_l{n}{mark}" for n in range(3)]  # written while this replica is down
    write_ledger(settings, [LedgerRecord(kind="accepted", claim_id=uuid.uuid4().hex,
                                         tenant="acme", aliases=(f"id:{event_id}",),
                                         envelope=envelope(event_id)) for event_id in later])

    with running_ingest(settings) as again:
        eventually(lambda: records_read(again.get("/metrics").text) >= 3)
        assert records_read(again.get("/metrics").text) == 3  # not the 20 from before
        for event_id, (_, body) in originals.items():
            assert post_id(again, event_id) == (200, body)  # from the index on disk
        for event_id in later:
            assert post_id(again, event_id) == (200, json.loads(envelope(event_id)))


@pytest.mark.parametrize("damage", ["corrupt", "foreign"])
def test_an_index_that_cannot_be_trusted_is_rebuilt_from_the_topic(
        settings: Settings, damage: str) -> None:
    topics = Topics.from_settings(settings)
    mark = uuid.uuid4().hex
    with running_ingest(settings) as first:
        originals = {f"evt_{damage}{n}{mark}": None for n in range(3)}
        for event_id in originals:
            originals[event_id] = post_id(first, event_id)[1]
        assert first.app.state.runtime.view.catch_up(10)

    if damage == "corrupt":
        for manifest in (index_path(settings) / "db").glob("MANIFEST-*"):
            manifest.write_bytes(b"\x00not a manifest" * 64)
    else:  # offsets that claim everything was read, but from another cluster's topic
        with opened_index(settings.idempotency_dir, topics.idempotency,
                          int(settings.idempotency_window * 1000)) as entries:
            offsets = entries.offsets()
            entries.start_over(TopicIdentity(topics.idempotency, "another-cluster", "x",
                                             settings.topic_partitions))
            entries.commit(offsets)
    total = len(read_to_end(settings, topics.idempotency))

    with running_ingest(settings) as again:
        eventually(lambda: records_read(again.get("/metrics").text) >= total)
        assert records_read(again.get("/metrics").text) == total  # the whole topic again
        for event_id, body in originals.items():
            assert post_id(again, event_id) == (200, body)


def test_each_process_takes_a_directory_of_its_own(tmp_path: Path) -> None:
    """Two ingest workers of one pod (WEBHOOKS_INGEST_WORKERS=2) never open one database;
    a restarted worker takes the free one back, and its offsets with it."""
    one = IndexDirectory.claim(tmp_path, "t.idempotency")
    two = IndexDirectory.claim(tmp_path, "t.idempotency")
    assert one.path != two.path
    one.release()
    again = IndexDirectory.claim(tmp_path, "t.idempotency")
    assert again.path == one.path
    again.release()
    two.release()


def test_kill_9_mid_apply_then_restart_gives_the_same_verdicts(
        settings: Settings, tmp_path: Path) -> None:
    topics = Topics.from_settings(settings)
    mark = uuid.uuid4().hex
    events_per_record, batches = 50, 5000  # 250,000 entries: seconds of applying
    expected: dict[str, str] = {}
    records: list[LedgerRecord | AcceptedBatch] = []
    for b in range(batches):
        events = []
        for n in range(events_per_record):
            event_id = f"evt_k{b}x{n}{mark}"
            events.append(AcceptedEvent((f"id:{event_id}",), envelope(event_id, n)))
            if n == 0 and b % 250 == 0:
                expected[event_id] = events[-1].envelope
        records.append(AcceptedBatch(batch_id=f"b{b}{mark}", tenant="acme", events=tuple(events)))
    keyed = f"evt_key{mark}"
    claim = LedgerRecord(kind="claim", claim_id=f"c{mark}", tenant="acme",
                         aliases=(f"key:k-{mark}", f"id:{keyed}"), envelope=envelope(keyed))
    records[batches // 2:batches // 2] = [claim, claim.accepted()]
    expected[keyed] = claim.envelope
    write_ledger(settings, records)
    total = len(read_to_end(settings, topics.idempotency))

    own = settings.model_copy(update={"idempotency_dir": tmp_path, "ingest_kafka_intake": False})
    service = ServiceProcess("ingest", own, tmp_path / "ingest.log").launch()
    try:
        # The process serves nothing until its ledger is loaded: its index growing past
        # a few polls' worth (each ~5 MB, written at once) tells that some were stored.
        eventually(lambda: _index_bytes(tmp_path) > 12 * 2**20, timeout=120, interval=0.01)
        service.kill()
    finally:
        service.stop()

    # The index as the kill left it: every record up to the stored offsets is in it.
    window_ms = int(own.idempotency_window * 1000)
    with opened_index(tmp_path, topics.idempotency, window_ms) as entries:
        stored = entries.offsets()
        assert stored, "nothing was stored before the kill"
        covered = [m for m in read_to_end(settings, topics.idempotency)
                   if m.offset() <= stored.get(m.partition(), -1)]
        assert 0 < len(covered) < total, "the kill came after the whole ledger was applied"
        assert all(entries.get(slot) is not None for m in covered for slot in _slots(m))
    unread = total - len(covered)

    with ServiceProcess("ingest", own, tmp_path / "ingest.log") as restarted:
        eventually(lambda: _records_read_of(restarted) >= unread, timeout=60)
        assert _records_read_of(restarted) == unread  # resumed, not rebuilt
        for event_id, original in expected.items():
            assert post_id(restarted, event_id) == (200, json.loads(original))
        assert post_id(restarted, f"evt_new{mark}")[0] == 202


def _records_read_of(service: ServiceProcess) -> float:
    return records_read(service.metrics())


def _index_bytes(root: Path) -> int:
    total = 0
    for file in root.glob("*/*/db/*"):
        with contextlib.suppress(FileNotFoundError):  # RocksDB deletes files as it goes
            total += file.stat().st_size
    return total


def _slots(message: Message) -> list[str]:
    record = decode_record(message.value())
    if isinstance(record, AcceptedBatch):
        return [f"{record.tenant}/{alias}" for event in record.events for alias in event.aliases]
    return [f"{record.tenant}/{alias}" for alias in record.aliases]
