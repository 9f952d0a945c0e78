"""Ledger: every published event accounted for, per endpoint, with its four timestamps.

Setup: the real worker (``webhooks serve fanout``, one process) on the benchmark broker;
the receiver in its own process (:class:`benchmarks.bench_fanout.ReceiverProcess`); a
short retry schedule (1 s, 2 s). One tenant has :data:`ENDPOINTS` endpoints subscribed to
everything; :data:`FAILING_SHARE` of them fail permanently (their URL is a loopback
port nobody listens on: connection refused), so their events end in the DLQ, while the
rest are healthy. Events are published at :data:`RATE` per second for
:data:`PUBLISH_SECONDS`, each carrying

- t0: when it was scheduled (the paced schedule),
- t1: when it was sent (handed to the producer; also the receiver's ``sent_at``),

and the benchmark notes t2, when Kafka acknowledged it (the producer's delivery report),
and takes t3, when it was received, from the attempt records (attempt start plus the
HTTP latency of the first successful attempt); the receiver's own clock gives t3 - t1
once more, as a check.

At the cutoff, :data:`CUTOFF_SECONDS` after the last publish (while the failing
endpoints' last events still wait in the retry tiers), each endpoint's ledger is read
from Kafka, apart from the receiver:

    published == delivered + dead_lettered + pending_at_cutoff

where delivered = events with a successful attempt record, dead_lettered = events on the
DLQ topic, pending_at_cutoff = events attempted for the endpoint (an attempt record: a
fresh task leaves no record before its first attempt ends) with no final outcome yet
(waiting in a retry tier). An event in none of these (never matched, or its first
attempt not over at the cutoff), or both delivered and dead-lettered,
unbalances the ledger. After the cutoff the run waits (up to :data:`SETTLE_SECONDS`)
until every pending event reached its end: the final ledger must have nothing pending,
and the receiver's count of distinct deliveries must equal ``delivered``. A report that
does not balance is void (``void: true``, the run fails).
"""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from concurrent.futures import Future
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from benchmarks.bench_fanout import ReceiverProcess
from benchmarks.context import BENCH_SECRETS_KEY, BenchContext, percentiles
from services.localdev.kafka_broker import free_port
from services.localdev.service_process import ServiceProcess
from webhooks.acked_producer import AckedProducer, Acknowledged
from webhooks.delivery import AttemptRecord, DeliveryTask
from webhooks.endpoints import Endpoint, EndpointSecret, new_endpoint_id
from webhooks.envelope import Envelope, utcnow
from webhooks.kafka import create_consumer, end_offsets
from webhooks.settings import Settings
from webhooks.signing import generate_secret
from webhooks.topics import Topics

ENDPOINTS = 20
FAILING_SHARE = 0.1
RATE = 50.0  # events per second
PUBLISH_SECONDS = 8.0
CUTOFF_SECONDS = 1.5
SETTLE_SECONDS = 30.0
TENANT = "ledger"


def run(context: BenchContext) -> dict[str, Any]:
    """Publish paced events to healthy and failing endpoints; balance each one's ledger."""
    settings = context.settings(retry_schedule="1s,2s", retry_jitter=0.0,
                                delivery_timeout=2.0, log_level="warning")
    topics = Topics.from_settings(settings)
    receiver = ReceiverProcess()
    producer = AckedProducer(settings.kafka)
    worker = ServiceProcess("fanout", settings, context.work_dir / "ledger-worker.log")
    try:
        endpoints = _endpoints(producer, topics, receiver)
        worker.start(timeout=120)
        _probe(producer, topics, receiver)
        published = _publish(producer, topics)
        records = Records(settings, [topics.attempts, topics.dlq])
        time.sleep(CUTOFF_SECONDS)
        cutoff = _ledger(records.read(), topics, set(published), endpoints)
        final, settled = _settle(records, topics, published, endpoints)
        stats = receiver.stats()
    finally:
        worker.stop()
        producer.close()
        receiver.stop()
    return _report(settings, published, endpoints, cutoff, final, settled, stats)


def _endpoints(producer: AckedProducer, topics: Topics, receiver: ReceiverProcess
               ) -> dict[str, bool]:
    """Endpoint id -> healthy, written to the endpoints topic before the worker starts."""
    failing = max(1, round(ENDPOINTS * FAILING_SHARE))
    dead_port = free_port()  # nothing listens here: every attempt is refused
    now = utcnow()
    healthy: dict[str, bool] = {}
    records = []
    for n in range(ENDPOINTS):
        ok = n >= failing
        url = receiver.url(f"/ledger/{n}") if ok else f"http://127.0.0.1:{dead_port}/ledger/{n}"
        endpoint = Endpoint(id=new_endpoint_id(), tenant=TENANT, url=url, events=["*"],
                            secrets=[EndpointSecret(secret=generate_secret())],
                            created=now, updated=now)
        healthy[endpoint.id] = ok
        records.append((endpoint.id.encode(), endpoint.sealed(BENCH_SECRETS_KEY).to_json()))
    producer.produce_all(topics.endpoints, records)
    return healthy


def _event(n: int, scheduled: float) -> Envelope:
    sent = time.time()
    return Envelope.create(type="bench.ledger", tenant=TENANT, api_version="2026-11-01",
                           data={"object": {"n": n, "t0": scheduled, "t1": sent,
                                            "sent_at": sent}})


def _probe(producer: AckedProducer, topics: Topics, receiver: ReceiverProcess) -> None:
    """Until the worker delivers (its group joined, its view ready); probes (n < 0) are
    only counted by the receiver and left out of the ledger."""
    deadline = time.monotonic() + 120
    while receiver.stats()["probes"] == 0:
        if time.monotonic() > deadline:
            raise TimeoutError("the worker did not deliver a probe event in 120 s")
        producer.send(topics.events, _event(-1, time.time()).to_json(), key=TENANT.encode())
        time.sleep(1.0)
    receiver.reset()


def _publish(producer: AckedProducer, topics: Topics) -> dict[str, dict[str, float]]:
    """Event id -> {t0, t1, t2} for events published at RATE for PUBLISH_SECONDS."""
    published: dict[str, dict[str, float]] = {}
    acks: list[Future[Acknowledged]] = []
    started = time.time()
    for n in range(int(RATE * PUBLISH_SECONDS)):
        scheduled = started + n / RATE
        time.sleep(max(0.0, scheduled - time.time()))
        envelope = _event(n, scheduled)
        times = published[envelope.id] = {"t0": scheduled,
                                          "t1": envelope.data["object"]["t1"]}
        future = producer.produce(topics.events, envelope.to_json(), key=TENANT.encode())
        future.add_done_callback(lambda f, times=times: times.setdefault("t2", time.time()))
        acks.append(future)
    for future in acks:
        future.result(60)  # raises if Kafka refused one: then nothing below is valid
    return published


class Records:
    """Every record of a few topics, read from the start up to their end at the call."""

    def __init__(self, settings: Settings, topics: list[str]) -> None:
        self.settings = settings
        self.topics = topics

    def read(self) -> dict[str, list[bytes]]:
        consumer = create_consumer(self.settings.kafka, f"bench-ledger-{uuid.uuid4().hex}")
        found: dict[str, list[bytes]] = {topic: [] for topic in self.topics}
        try:
            ends = {(topic, p): end for topic in self.topics
                    for p, end in end_offsets(consumer, topic).items() if end}
            # Assigned, not subscribed: no group to join on every read.
            consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for topic, p in ends])
            deadline = time.monotonic() + 60
            while ends and time.monotonic() < deadline:
                message = consumer.poll(0.5)
                if message is None or message.error():
                    continue
                found[message.topic()].append(message.value())
                place = (message.topic(), message.partition())
                if place in ends and message.offset() + 1 >= ends[place]:
                    del ends[place]
        finally:
            consumer.close()
        return found


def _ledger(records: dict[str, list[bytes]], topics: Topics, published: set[str],
            endpoints: dict[str, bool]) -> dict[str, dict[str, Any]]:
    """Per endpoint: the sets of delivered, dead-lettered and pending events, and when
    each delivered event was received (t3)."""
    ledger: dict[str, dict[str, Any]] = {
        endpoint: {"delivered": set(), "dead_lettered": set(), "matched": set(), "t3": {}}
        for endpoint in endpoints}
    # A fresh task leaves its first record when its first attempt ends (the attempt
    # record), so "matched" is an event with an attempt for the endpoint.
    for value in records[topics.attempts]:
        attempt = AttemptRecord.from_json(value)
        if attempt.event_id not in published or attempt.endpoint_id not in ledger:
            continue
        book = ledger[attempt.endpoint_id]
        book["matched"].add(attempt.event_id)
        if attempt.status == "succeeded":
            book["delivered"].add(attempt.event_id)
            received = attempt.timestamp.timestamp() + attempt.latency_ms / 1000
            book["t3"][attempt.event_id] = min(received, book["t3"].get(attempt.event_id,
                                                                          received))
    for value in records[topics.dlq]:
        task = DeliveryTask.from_json(value)
        if task.event.id in published and task.endpoint_id in ledger:
            ledger[task.endpoint_id]["dead_lettered"].add(task.event.id)
    for book in ledger.values():
        book["pending"] = book["matched"] - book["delivered"] - book["dead_lettered"]
    return ledger


def _settle(records: Records, topics: Topics, published: dict[str, dict[str, float]],
            endpoints: dict[str, bool]) -> tuple[dict[str, dict[str, Any]], bool]:
    """The ledger once every event is delivered or dead-lettered everywhere (True), or
    as it stands after SETTLE_SECONDS (False)."""
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        ledger = _ledger(records.read(), topics, set(published), endpoints)
        settled = all(len(book["delivered"] | book["dead_lettered"]) == len(published)
                      for book in ledger.values())
        if settled or time.monotonic() > deadline:
            return ledger, settled
        time.sleep(1.0)


def _report(settings: Settings, published: dict[str, dict[str, float]],
            endpoints: dict[str, bool], ledger: dict[str, dict[str, Any]],
            final: dict[str, dict[str, Any]], settled: bool,
            stats: dict[str, Any]) -> dict[str, Any]:
    events = set(published)
    per_endpoint = []
    balanced = True
    for endpoint_id, book in ledger.items():
        delivered, dead, pending = book["delivered"], book["dead_lettered"], book["pending"]
        overlap = len(delivered & dead)
        unaccounted = len(events - delivered - dead - pending)
        row_balanced = (len(events) == len(delivered) + len(dead) + len(pending)
                        and not overlap and not unaccounted)
        balanced &= row_balanced
        per_endpoint.append({"endpoint": endpoint_id, "healthy": endpoints[endpoint_id],
                             "published": len(events), "delivered": len(delivered),
                             "dead_lettered": len(dead), "pending_at_cutoff": len(pending),
                             "unaccounted": unaccounted, "in_two_states": overlap,
                             "balanced": row_balanced})
    final_delivered = sum(len(book["delivered"]) for book in final.values())
    receiver_agrees = stats["distinct"] == final_delivered
    balanced &= settled and receiver_agrees
    t3: dict[str, list[float]] = defaultdict(list)
    for book in final.values():
        for event_id, received in book["t3"].items():
            t3[event_id].append(received)
    hops = {"t1_minus_t0_scheduling": [], "t2_minus_t1_acknowledged": [],
            "t3_minus_t1_received": [], "t3_minus_t0_end_to_end": []}
    for event_id, times in published.items():
        hops["t1_minus_t0_scheduling"].append(times["t1"] - times["t0"])
        hops["t2_minus_t1_acknowledged"].append(times["t2"] - times["t1"])
        for received in t3[event_id]:
            hops["t3_minus_t1_received"].append(received - times["t1"])
            hops["t3_minus_t0_end_to_end"].append(received - times["t0"])
    totals = {key: sum(row[key] for row in per_endpoint)
              for key in ("published", "delivered", "dead_lettered", "pending_at_cutoff")}
    return {
        "setup": (f"1 fanout worker process, {settings.topic_partitions} partitions, "
                  f"{ENDPOINTS} endpoints ({sum(not ok for ok in endpoints.values())} refusing "
                  f"connections), {RATE:g} events/s for {PUBLISH_SECONDS:g} s, retry schedule "
                  f"1s,2s, delivery_timeout={settings.delivery_timeout:g}s"),
        "ledger": {"balanced": balanced, "void": not balanced,
                   "published": totals["published"], "delivered": totals["delivered"],
                   "dead_lettered": totals["dead_lettered"],
                   "pending": totals["pending_at_cutoff"],
                   "cutoff_after_last_publish_s": CUTOFF_SECONDS,
                   "final": {"settled": settled, "delivered": final_delivered,
                             "dead_lettered": sum(len(book["dead_lettered"])
                                                  for book in final.values()),
                             "pending": sum(len(book["pending"]) for book in final.values())},
                   "receiver_distinct_deliveries": stats["distinct"],
                   "receiver_requests": stats["count"],
                   "equation": "published == delivered + dead_lettered + pending_at_cutoff, "
                               "per endpoint"},
        "timestamps": {name: percentiles(samples) for name, samples in hops.items()},
        "receiver_t3_minus_t1": percentiles(stats["latencies"]),
        "per_endpoint": per_endpoint,
        "void": not balanced,
    }
