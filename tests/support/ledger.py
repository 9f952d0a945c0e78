"""The ledger every fault test ends with: what was published against what came out.

A :class:`Ledger` records the events a test published (only those that got a 2xx, or
whose Kafka write was acknowledged) and the endpoints they were meant for. After the
fault, :meth:`Ledger.check` waits until the platform settled and asserts:

- every published event reached every matching endpoint at least once, or its task sits
  in the DLQ topic (nothing that got a 2xx is lost);
- every request a receiver got carries the event's id as ``webhook-id`` (a duplicate is
  the same webhook, recognisable by the receiver);
- the events topic holds no event of the test the ledger does not know (a retried
  publish never became a second event);
- ``GET /v1/events`` lists each published event exactly once;
- duplicate deliveries stay within the bound of what the fault could cause: per
  (event, endpoint) pair, one extra copy for each extra copy of the event on the events
  topic, one for each fault that hit while the event was on the topic but not yet
  committed by the fanout (:meth:`Ledger.fault`, :func:`uncommitted_events`), and one
  for each attempt that timed out or lost its connection (the receiver may have got it;
  :data:`MAYBE_RECEIVED`).

The report is printed, kept in :data:`REPORTS` for the run's summary, and written as
JSON to :data:`REPORT_FILE` (one object per test), so the figures can be quoted.
"""

from __future__ import annotations

import json
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from tests.support.receiver import Receiver
from webhooks.delivery import AttemptRecord, DeliveryTask
from webhooks.envelope import Envelope
from webhooks.kafka import end_offsets
from webhooks.matching import matches_any
from webhooks.settings import Settings
from webhooks.topics import Topics

REPORT_FILE = Path(tempfile.gettempdir()) / "webhooks-fault-ledger.jsonl"
REPORTS: list[LedgerReport] = []

MAYBE_RECEIVED = frozenset({"timeout", "network"})
"""Attempt errors after which the request may have reached the receiver (it answered too
late, or the connection broke after the request was sent): a retry is then a duplicate."""

Pair = tuple[str, str]
"""(event id, endpoint id)."""
Record = tuple[int, int, bytes, float]
"""A Kafka record: partition, offset, value, timestamp (epoch seconds)."""


@dataclass(frozen=True)
class LedgerEndpoint:
    """An endpoint of the test: where its receiver path is and what it subscribes to."""

    id: str
    tenant: str
    path: str
    events: tuple[str, ...]
    failing: bool = False
    """Answers every request with a failure: each of its pairs must end in the DLQ, and
    its requests are attempts, not deliveries."""


@dataclass
class LedgerReport:
    """What one fault test caused, in numbers."""

    test: str
    fault: str
    events: int
    pairs: int
    delivered_pairs: int
    dead_lettered_pairs: int
    requests: int
    duplicates: int
    duplicate_bound: int
    events_topic_copies: int
    dlq_duplicates: int
    in_flight_at_faults: int
    """Events on the topic but not committed by the fanout when a fault hit (summed)."""
    failed_attempts: int
    """Failed attempts at the endpoints that answer 2xx: the fault was felt."""
    listed: int

    def line(self) -> str:
        return (f"{self.test}: {self.events} events, {self.pairs} pairs "
                f"({self.delivered_pairs} delivered, {self.dead_lettered_pairs} dead-lettered), "
                f"{self.requests} requests, {self.duplicates} duplicate deliveries "
                f"(bound {self.duplicate_bound}), {self.events_topic_copies} extra copies on "
                f"the events topic, {self.dlq_duplicates} duplicate DLQ records, "
                f"{self.failed_attempts} failed attempts at healthy endpoints, "
                f"{self.in_flight_at_faults} events in flight at the faults; fault: "
                f"{self.fault}")


class TopicFollower:
    """A consumer reading every partition of one topic from the beginning, kept open
    between reads (assigned, not subscribed: no group to join)."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.topic = topic
        self.consumer = Consumer({**settings.kafka.client_config(),
                                  "group.id": f"ledger-{uuid.uuid4().hex}",
                                  "enable.auto.commit": False})
        self.partitions = sorted(end_offsets(self.consumer, topic))
        self.consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING)
                              for p in self.partitions])
        self.next_offsets = {p: 0 for p in self.partitions}
        self.records: list[Record] = []
        """Every record read so far."""

    def read(self, timeout: float = 30.0) -> list[Record]:
        """Read up to the end of every partition as it is now; return every record so far."""
        ends = end_offsets(self.consumer, self.topic)
        deadline = time.monotonic() + timeout
        while any(self.next_offsets[p] < ends[p] for p in self.partitions):
            assert time.monotonic() < deadline, f"{self.topic}: not read to its end"
            message = self.consumer.poll(0.2)
            if message is None or message.error():
                continue
            self.next_offsets[message.partition()] = message.offset() + 1
            if message.value() is not None:
                self.records.append((message.partition(), message.offset(), message.value(),
                                     message.timestamp()[1] / 1000))
        return self.records

    def close(self) -> None:
        self.consumer.close()


@dataclass(frozen=True)
class FaultSnapshot:
    """Where the fanout stood on the events topic when a fault hit: events from
    ``committed`` (per partition, inclusive) appended before ``at`` were in flight."""

    committed: dict[int, int]
    at: float
    """When the fault was over (epoch seconds; Kafka record timestamps are compared)."""


def committed_offsets(settings: Settings, group: str, topic: str) -> dict[int, int]:
    """The offsets ``group`` committed on ``topic`` right now, per partition (-1: none)."""
    consumer = Consumer({**settings.kafka.client_config(), "group.id": group,
                         "enable.auto.commit": False})
    try:
        partitions = end_offsets(consumer, topic)
        committed = consumer.committed([TopicPartition(topic, p) for p in partitions],
                                       timeout=30)
        return {tp.partition: tp.offset for tp in committed}
    finally:
        consumer.close()


def fanout_group(settings: Settings) -> str:
    """The fanout's consumer group (its Faust app id)."""
    return f"{settings.topic_prefix}-fanout"


@dataclass
class Ledger:
    """Published events and their endpoints, for one test."""

    settings: Settings
    receiver: Receiver
    test: str
    event_prefix: str
    """The test's own event resource (``prefix.*``): what the check looks at."""
    admin_key: str = "key-admin"
    """Lists each tenant's events (``?tenant=``)."""
    endpoints: list[LedgerEndpoint] = field(default_factory=list)
    published: dict[str, tuple[str, str]] = field(default_factory=dict)
    """Event id -> (tenant, type), for every event acknowledged to its producer."""
    fault_snapshots: list[FaultSnapshot] = field(default_factory=list)
    """The fanout's position on the events topic at each fault."""

    def endpoint(self, endpoint_id: str, tenant: str, path: str, events: Iterable[str],
                 failing: bool = False) -> None:
        """An endpoint of ``tenant`` whose requests arrive at the receiver's ``path``."""
        self.endpoints.append(LedgerEndpoint(endpoint_id, tenant, path, tuple(events),
                                             failing))

    def accepted(self, envelope: dict[str, object] | Envelope) -> None:
        """Record an event its producer saw acknowledged (a 2xx, or Kafka's ack)."""
        if isinstance(envelope, Envelope):
            self.published[envelope.id] = (envelope.tenant, envelope.type)
        else:
            self.published[str(envelope["id"])] = (str(envelope["tenant"]),
                                                   str(envelope["type"]))

    def fault(self, strike: Callable[[], None]) -> None:
        """Run ``strike`` (the fault), noting what the fanout had not committed by then:
        events from its committed offsets up to the last one appended before the fault
        ended were in flight, and may be delivered again."""
        topic = Topics.from_settings(self.settings).events
        # Read before the fault (the broker may be the one killed); commits only advance,
        # so this may count a few events too many as in flight, never too few.
        committed = committed_offsets(self.settings, fanout_group(self.settings), topic)
        strike()
        self.fault_snapshots.append(FaultSnapshot(committed, time.time()))

    def pairs(self) -> set[Pair]:
        """Every (event, endpoint) that must end delivered or dead-lettered."""
        return {(event_id, endpoint.id) for event_id, (tenant, type) in self.published.items()
                for endpoint in self.endpoints
                if endpoint.tenant == tenant and matches_any(endpoint.events, type)}

    def check(self, eventlog_url: str, fault: str, timeout: float = 120.0) -> LedgerReport:
        """Wait until the platform settled, assert the guarantees, report duplicates."""
        topics = Topics.from_settings(self.settings)
        followers = {name: TopicFollower(self.settings, topic) for name, topic in
                     (("events", topics.events), ("dlq", topics.dlq),
                      ("attempts", topics.attempts))}
        try:
            return self._check(followers, eventlog_url, fault, timeout)
        finally:
            for follower in followers.values():
                follower.close()

    def _check(self, followers: dict[str, TopicFollower], eventlog_url: str, fault: str,
               timeout: float) -> LedgerReport:
        assert self.published, "the test published nothing"
        wanted = self.pairs()
        failing = {endpoint.id for endpoint in self.endpoints if endpoint.failing}
        paths = {endpoint.id: endpoint.path for endpoint in self.endpoints
                 if not endpoint.failing}
        deadline = time.monotonic() + timeout
        while True:
            received = self._received(paths)
            dead = Counter(self._dead_lettered(followers["dlq"].read()))
            missing = {pair for pair in wanted if not dead[pair] and (
                pair[1] in failing or not received[pair])}
            if not missing or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert not missing, (f"{len(missing)} of {len(wanted)} (event, endpoint) pairs were "
                             f"neither delivered nor dead-lettered, e.g. {sorted(missing)[:3]}")

        for endpoint in self.endpoints:
            for request in self.receiver.at(endpoint.path):
                assert request.headers["webhook-id"] == request.event_id, request.headers

        copies = self._copies_on_events_topic(followers["events"].read())
        unknown = set(copies) - set(self.published)
        assert not unknown, f"events on the topic no producer was acknowledged: {unknown}"
        listed = self._listed(eventlog_url, deadline)
        listed_counts = Counter(listed)
        assert {e for e, n in listed_counts.items() if n > 1} == set(), "listed twice"
        assert set(listed) == set(self.published), (
            f"event log: {len(set(self.published) - set(listed))} missing, "
            f"{len(set(listed) - set(self.published))} unexpected")

        # Duplicates: requests beyond the first, per pair, against what the faults allow.
        uncommitted = uncommitted_events(self.fault_snapshots, followers["events"].records,
                                         set(self.published))
        attempts = [AttemptRecord.from_json(value)
                    for _, _, value, _ in followers["attempts"].read()]
        unanswered = Counter((a.event_id, a.endpoint_id) for a in attempts
                             if a.error in MAYBE_RECEIVED)
        positions: dict[str, list[tuple[int, int]]] = {}
        for partition, offset, value, _ in followers["events"].records:
            positions.setdefault(Envelope.from_json(value).id, []).append((partition, offset))
        duplicates = bound = 0
        unexplained = []
        for pair in sorted(wanted):
            if pair[1] in failing:
                continue
            extra = max(0, received[pair] - 1)
            allowed = copies[pair[0]] - 1 + uncommitted[pair[0]] + unanswered[pair]
            if extra > allowed:
                unexplained.append(
                    f"{pair}: {extra} duplicates, {allowed} explained (at (partition, offset) "
                    f"{positions.get(pair[0])}, uncommitted at {uncommitted[pair[0]]} faults, "
                    f"{unanswered[pair]} attempts unanswered in time)")
            duplicates += extra
            bound += allowed
        assert not unexplained, (
            f"{len(unexplained)} pairs with more duplicate deliveries than the faults explain "
            f"(fanout positions at the faults: {self.fault_snapshots}): "
            + "; ".join(unexplained[:5]))
        report = LedgerReport(
            test=self.test, fault=fault, events=len(self.published), pairs=len(wanted),
            delivered_pairs=sum(1 for pair in wanted if received[pair]),
            dead_lettered_pairs=sum(1 for pair in wanted if dead[pair] and not received[pair]),
            requests=sum(received[pair] for pair in wanted), duplicates=duplicates,
            duplicate_bound=bound,
            events_topic_copies=sum(n - 1 for n in copies.values()),
            dlq_duplicates=sum(n - 1 for pair, n in dead.items() if pair in wanted and n > 1),
            in_flight_at_faults=sum(uncommitted.values()),
            failed_attempts=sum(1 for a in attempts if a.status == "failed"
                                and (a.event_id, a.endpoint_id) in wanted
                                and a.endpoint_id not in failing),
            listed=len(listed))
        _record(report)
        return report

    def _received(self, paths: dict[str, str]) -> Counter[Pair]:
        counts: Counter[Pair] = Counter()
        for endpoint_id, path in paths.items():
            for request in self.receiver.at(path):
                counts[(request.event_id, endpoint_id)] += 1
        return counts

    @staticmethod
    def _dead_lettered(records: list[Record]) -> Iterable[Pair]:
        for _, _, value, _ in records:
            task = DeliveryTask.from_json(value)
            yield task.event.id, task.endpoint_id

    def _copies_on_events_topic(self, records: list[Record]) -> Counter[str]:
        """How many times each of the test's events was appended to the events topic."""
        copies: Counter[str] = Counter()
        for _, _, value, _ in records:
            envelope = Envelope.from_json(value)
            if envelope.type.startswith(f"{self.event_prefix}."):
                copies[envelope.id] += 1
        return copies

    def _listed(self, eventlog_url: str, deadline: float) -> list[str]:
        """Every event id ``GET /v1/events`` lists for the test's type, each tenant paged
        to the end, once the listing holds every published event (the sink lags a little)."""
        headers = {"Authorization": f"Bearer {self.admin_key}"}
        tenants = sorted({tenant for tenant, _ in self.published.values()})
        with httpx.Client(base_url=eventlog_url, headers=headers, timeout=30.0) as client:
            while True:
                listed = [event_id for tenant in tenants
                          for event_id in self._listed_for(client, tenant)]
                if set(listed) >= set(self.published) or time.monotonic() > deadline:
                    return listed
                time.sleep(2.0)  # the sink and these queries share the engine

    def _listed_for(self, client: httpx.Client, tenant: str) -> list[str]:
        listed: list[str] = []
        cursor: str | None = None
        while True:
            params = {"tenant": tenant, "type": f"{self.event_prefix}.*", "limit": 1000,
                      **({"cursor": cursor} if cursor else {})}
            page = client.get("/v1/events", params=params)
            assert page.status_code == 200, page.text
            body = page.json()
            listed += [event["id"] for event in body["data"]]
            cursor = body["next_cursor"]
            if not body["has_more"]:
                return listed


def uncommitted_events(snapshots: list[FaultSnapshot], records: list[Record], ids: set[str]
                       ) -> Counter[str]:
    """Per event, at how many of the ``snapshots`` some copy of it was on the events topic
    but not yet committed by the fanout: in flight when that fault hit."""
    counts: Counter[str] = Counter()
    for snapshot in snapshots:
        hit = set()
        for partition, offset, value, timestamp in records:
            committed = max(snapshot.committed.get(partition, -1), 0)
            if offset >= committed and timestamp <= snapshot.at:
                event_id = Envelope.from_json(value).id
                if event_id in ids:
                    hit.add(event_id)
        counts.update(hit)
    return counts


def _record(report: LedgerReport) -> None:
    REPORTS.append(report)
    print(f"\nLEDGER {report.line()}")
    with REPORT_FILE.open("a") as out:
        out.write(json.dumps(asdict(report)) + "\n")
