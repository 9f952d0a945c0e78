"""``kill -9`` of each service in the middle of its work, then a restart; each test ends
with the ledger check (tests/support/ledger.py) and reports the duplicates it caused.

The platform (eventlog, two fanout workers, ingest) is shared by the package's tests;
each test uses its own event type, endpoints and receiver paths, and starts whatever a
previous test left killed.
"""

from __future__ import annotations

import json
import threading
import time

import pytest

from tests.faults.producers import RetryingProducers
from tests.faults.stack import FaultStack, add_endpoint, probe_until_live, wait_until
from tests.support.ledger import Ledger, TopicFollower
from tests.support.receiver import Receiver
from webhooks.envelope import Envelope
from webhooks.kafka import create_producer
from webhooks.topics import Topics

SINK_BACKLOG = 3000


def slowish(_: int) -> tuple[int, dict[str, str], float]:
    return 200, {}, 0.02


def ledger_for(stack: FaultStack, receiver: Receiver, request: pytest.FixtureRequest,
               prefix: str) -> Ledger:
    return Ledger(stack.settings, receiver, test=request.node.name, event_prefix=prefix)


def metric(text: str, name: str) -> float:
    """The sum of every sample of ``name`` in a Prometheus text page."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and not line.startswith("#"))


def test_kill_9_of_ingest_while_it_answers_requests(
        stack: FaultStack, receiver: Receiver, request: pytest.FixtureRequest) -> None:
    stack.ensure("eventlog", "fanout", "fanout-2", "ingest")
    stack.wait_fanout_settled()
    ledger = ledger_for(stack, receiver, request, "ingestkill")
    add_endpoint(stack, ledger, receiver, "/ingestkill/ok")
    add_endpoint(stack, ledger, receiver, "/ingestkill/dead", failing=True)
    probe_until_live(stack, ledger, receiver)

    producers = RetryingProducers(ledger, lambda: stack.url("ingest"), threads=4,
                                  per_thread=40).start()
    producers.wait_accepted(40)
    stack.kill("ingest")
    accepted_at_kill = producers.accepted
    stack.start("ingest")
    producers.join()
    assert accepted_at_kill < 160, "the kill came too late to prove anything"
    assert producers.failed_tries > 0, "no request met the dead ingest"

    report = ledger.check(stack.url("eventlog"), fault=(
        f"kill -9 of ingest after {accepted_at_kill} of 160 events got their 2xx; 4 "
        f"producers retrying with the same Idempotency-Key ({producers.failed_tries} "
        "failed tries)"))
    # Only a claim in flight at the kill can be appended twice (by its takeover).
    assert report.events_topic_copies <= 4


def test_kill_9_of_ingest_while_the_kafka_intake_reads(
        stack: FaultStack, receiver: Receiver, request: pytest.FixtureRequest) -> None:
    stack.ensure("eventlog", "fanout", "fanout-2", "ingest")
    stack.wait_fanout_settled()
    ledger = ledger_for(stack, receiver, request, "intakekill")
    add_endpoint(stack, ledger, receiver, "/intakekill/ok")
    probe_until_live(stack, ledger, receiver)

    topics = Topics.from_settings(stack.settings)
    messages = 1500
    producer = create_producer(stack.settings.kafka)

    def write_intake() -> None:
        # Without ids: ingest derives each id from the message's position, so a re-read
        # after the crash must give the same id.
        for n in range(messages):
            producer.produce(topics.ingest, key=b"acme", value=json.dumps({
                "type": "intakekill.created", "tenant": "acme",
                "data": {"object": {"n": n}}}).encode())
            producer.poll(0)
            if n % 100 == 99:
                time.sleep(0.2)  # ~3 s of intake traffic
        assert producer.flush(30) == 0, "Kafka did not acknowledge every intake message"

    writer = threading.Thread(target=write_intake)
    writer.start()
    wait_until(lambda: sum(1 for r in receiver.at("/intakekill/ok")
                           if json.loads(r.body)["type"] == "intakekill.created") >= 100,
               "100 intake events delivered")
    stack.kill("ingest")
    writer.join()
    stack.start("ingest")

    # Every intake message became exactly one event (one id per message, maybe appended
    # twice), and nothing was lost.
    events = TopicFollower(stack.settings, topics.events)
    try:
        # The restarted intake reads again once the killed one's group membership
        # expires (librdkafka's default session timeout, 45 s).
        deadline = time.monotonic() + 120
        while True:
            ids_by_n: dict[int, set[str]] = {}
            for _, _, value, _ in events.read():
                envelope = Envelope.from_json(value)
                if envelope.type == "intakekill.created":
                    ids_by_n.setdefault(envelope.data["object"]["n"], set()).add(envelope.id)
                    ledger.accepted(envelope)
            if len(ids_by_n) == messages or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    finally:
        events.close()
    assert len(ids_by_n) == messages, f"{messages - len(ids_by_n)} intake messages lost"
    assert all(len(ids) == 1 for ids in ids_by_n.values()), "a re-read made a second event"

    ledger.check(stack.url("eventlog"), fault=(
        f"kill -9 of ingest while its Kafka intake read {messages} messages (after ~100 "
        "were delivered)"))


def test_kill_9_of_the_eventlog_in_the_middle_of_clickhouse_inserts(
        stack: FaultStack, receiver: Receiver, request: pytest.FixtureRequest) -> None:
    stack.ensure("eventlog", "fanout", "fanout-2", "ingest")
    stack.wait_fanout_settled()
    ledger = ledger_for(stack, receiver, request, "sinkkill")
    add_endpoint(stack, ledger, receiver, "/sinkkill/ok")
    probe_until_live(stack, ledger, receiver)

    def rows() -> float:
        return metric(stack.processes["eventlog"].metrics(),
                      'eventlog_sink_rows_total{table="events"}')

    events = [Envelope.create(type="sinkkill.created", tenant="acme", data={"object": {"n": n}},
                              api_version=stack.settings.api_version)
              for n in range(SINK_BACKLOG)]
    before = rows()
    stack.platform.events(events)
    for envelope in events:
        ledger.accepted(envelope)
    # The sink inserts the backlog in batches of 200 records (events and attempts): kill
    # it after its first inserts, well before the last.
    wait_until(lambda: rows() - before >= 200, "the sink's first inserts")
    inserted = rows() - before
    stack.kill("eventlog")
    assert inserted < SINK_BACKLOG, "the kill came too late to prove anything"
    stack.start("eventlog")

    ledger.check(stack.url("eventlog"), fault=(
        f"kill -9 of the eventlog while its sink inserted a backlog of {SINK_BACKLOG:,} "
        f"events in batches of 200 (~{inserted:.0f} of them inserted at the kill)"))


def test_kill_9_of_one_of_two_fanout_workers_then_of_the_only_one(
        stack: FaultStack, receiver: Receiver, request: pytest.FixtureRequest) -> None:
    stack.ensure("eventlog", "fanout", "fanout-2", "ingest")
    stack.wait_fanout_settled()
    ledger = ledger_for(stack, receiver, request, "fanoutkill")
    # Six tenants, so that the events (keyed by tenant) spread over both workers.
    tenants = [f"tenant{n}" for n in range(6)]
    for tenant in tenants:
        add_endpoint(stack, ledger, receiver, f"/fanoutkill/{tenant}", tenant=tenant,
                     behaviour=slowish)
    add_endpoint(stack, ledger, receiver, "/fanoutkill/dead", tenant=tenants[0],
                 failing=True)
    probe_until_live(stack, ledger, receiver)
    paths = [f"/fanoutkill/{tenant}" for tenant in tenants]

    def delivered() -> int:
        return sum(len(receiver.at(path)) for path in paths)

    def wave(per_tenant: int) -> int:
        events = [Envelope.create(type="fanoutkill.created", tenant=tenant,
                                  data={"object": {"n": n}},
                                  api_version=stack.settings.api_version)
                  for n in range(per_tenant) for tenant in tenants]
        stack.platform.events(events)
        for envelope in events:
            ledger.accepted(envelope)
        return len(events)

    # One of two: its partitions move to the other worker (after the session timeout).
    start = delivered()
    sent = wave(200)
    wait_until(lambda: delivered() - start >= sent // 5, "a fifth of the first wave")
    ledger.fault(lambda: stack.kill("fanout-2"))
    first_kill_at = delivered() - start
    assert first_kill_at < sent, "the first kill came too late to prove anything"
    deadline = time.monotonic() + 60
    while set(ledger.published) - {r.event_id for path in paths for r in receiver.at(path)} \
            and time.monotonic() < deadline:
        # Until every event is delivered, the killed worker's share by the survivor after
        # the rebalance (the session timeout is 10 s); what never is, the ledger reports.
        time.sleep(0.1)

    # The only one: everything since its last commit is done again by its successor.
    start = delivered()
    sent = wave(200)
    wait_until(lambda: delivered() - start >= sent // 5, "a fifth of the second wave")
    ledger.fault(lambda: stack.kill("fanout"))
    second_kill_at = delivered() - start
    assert second_kill_at < sent, "the second kill came too late to prove anything"
    stack.start("fanout")

    ledger.check(stack.url("eventlog"), fault=(
        f"kill -9 of one of two fanout workers ({first_kill_at} of 1,200 deliveries made), "
        f"then of the only one ({second_kill_at} of 1,200 deliveries made), restart"))
