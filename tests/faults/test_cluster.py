"""The platform on a cluster of three brokers (KRaft, every node broker and controller),
its topics replicated three times with ``min.insync.replicas=2``, under steady load
(ingest over HTTP and its Kafka intake, ten endpoints, one of them failing): brokers
crash, restart and leave while events flow, and the ledger check ends it.

One cluster and one platform for the module, the faults chained in one test:

1. ``SIGKILL`` of a follower (neither the active controller nor a leader of the events
   partitions), restarted 2 s later;
2. ``SIGKILL`` of the node that is both the active controller and the leader of every
   events partition, restarted 2 s later;
3. a rolling restart: each node in turn stopped with SIGTERM (a controlled shutdown that
   hands its leadership over) and started again, the next one only once it rejoined and
   every partition's ISR is full;
4. two nodes killed at once: fewer in-sync replicas than ``min.insync.replicas``, so
   ingest answers 503 (a problem document, code ``unavailable``) until one is back.

Each fault lasts until the node rejoined and the fanout's group is stable again. The
longest pause in deliveries of each phase and the duplicates go into the fault ledger.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from services.localdev.kafka_cluster import LocalKafkaCluster
from tests.faults.producers import IntakeWriter, RetryingProducers, stop_load
from tests.faults.stack import (
    FaultStack,
    Phases,
    add_endpoint,
    fault_settings,
    own_clickhouse,
    probe_until_live,
    wait_until,
)
from tests.support.ledger import Ledger
from tests.support.receiver import Receiver

FENCE_AFTER_MS = 4000
"""``broker.session.timeout.ms`` of the cluster: how long the controller waits for a
silent broker's heartbeat before it fences it, moving its leadership and dropping it from
every ISR (Kafka's default is 9 s; each crash below pauses writes for about this long)."""
DOWN_SECONDS = 2.0
TENANTS = ("acme", "globex")
ENDPOINTS_PER_TENANT = 5


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafkaCluster]:
    if os.environ.get("WEBHOOKS_KAFKA_BOOTSTRAP"):
        pytest.skip("needs local brokers it may kill (WEBHOOKS_KAFKA_BOOTSTRAP names one)")
    own = LocalKafkaCluster(tmp_path_factory.mktemp("kafka-cluster"), heap="256m",
                            extra_config={"broker.session.timeout.ms": str(FENCE_AFTER_MS),
                                          "broker.heartbeat.interval.ms": "1000"})
    own.start()
    yield own
    for node in own.nodes:  # its data is thrown away: no controlled shutdown
        own.kill(node)


@pytest.fixture(scope="module")
def cluster_stack(cluster: LocalKafkaCluster, clickhouse_base_url: str,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultStack]:
    """eventlog, fanout and ingest on the cluster; the events topic created first with
    the active controller as the preferred leader of every partition, so that one crash
    takes both away."""
    prefix = f"c{uuid.uuid4().hex[:10]}"
    controller = cluster.active_controller()
    others = [node for node in cluster.nodes if node != controller]
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    events = f"{prefix}.events"
    admin.create_topics([NewTopic(events, num_partitions=3, replica_assignment=[
        [controller, *others], [controller, *reversed(others)], [controller, *others]])]
    )[events].result(30)
    settings = fault_settings(cluster.bootstrap, own_clickhouse(
        clickhouse_base_url, tmp_path_factory.mktemp("cluster-clickhouse")),
        topic_prefix=prefix, topic_replication=3)
    platform = FaultStack(settings, tmp_path_factory.mktemp("cluster-logs"))
    try:
        platform.start_together("eventlog", "fanout", "ingest")
        yield platform
    finally:
        platform.stop_all()


def test_brokers_crash_restart_and_roll_while_events_flow(
        cluster: LocalKafkaCluster, cluster_stack: FaultStack, receiver: Receiver,
        request: pytest.FixtureRequest) -> None:
    stack = cluster_stack
    topics = stack.platform.topics
    assert not cluster.under_replicated(), "the cluster starts with every ISR full"
    isr = {node.id: len(node.isrs) for node in cluster.metadata().topics[
        topics.events].partitions.values()}
    assert set(isr.values()) == {3}, isr
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    for topic in (topics.events, topics.idempotency, topics.attempts):
        resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
        config = admin.describe_configs([resource])[resource].result(30)
        assert config["min.insync.replicas"].value == "2", topic

    ledger = Ledger(stack.settings, receiver, test=request.node.name, event_prefix="cluster")
    paths = []
    for tenant in TENANTS:
        for n in range(ENDPOINTS_PER_TENANT):
            failing = tenant == "acme" and n == 0
            path = f"/cluster/{tenant}/{n}"
            add_endpoint(stack, ledger, receiver, path, tenant=tenant, failing=failing)
            if not failing:
                paths.append(path)
    probe_until_live(stack, ledger, receiver)
    stack.wait_fanout_committed()

    # ~10-20 events/s over HTTP (as fast as 6 producers get answers, each pausing 0.2 s),
    # 10/s through the Kafka intake: ~100-150 deliveries a second.
    producers = [RetryingProducers(ledger, lambda: stack.url("ingest"), threads=3,
                                   per_thread=None, api_key=f"key-{tenant}", pause=0.2).start()
                 for tenant in TENANTS]
    intake = IntakeWriter(ledger, rate=10.0, tenants=TENANTS).start()
    phases = Phases()
    phases.begin("steady")
    wait_until(lambda: sum(p.accepted for p in producers) >= 40, "40 events accepted")

    def accepted() -> int:
        return sum(p.accepted for p in producers)

    leaders = set(cluster.leaders(topics.events).values())
    controller = cluster.active_controller()
    follower = next(node for node in cluster.nodes if node not in leaders | {controller})

    def crash_and_restart(node: int) -> None:
        cluster.kill(node)
        phases.note(f"node {node} killed")
        time.sleep(DOWN_SECONDS)
        cluster.restart(node)
        phases.note(f"node {node} rejoined")
        stack.wait_fanout_settled(timeout=90)
        phases.note("fanout settled")

    phases.begin("follower crash")
    ledger.fault(lambda: crash_and_restart(follower))

    phases.begin("leader and controller crash")
    (leader,) = set(cluster.leaders(topics.events).values())
    leader_was_controller = leader == cluster.active_controller()
    ledger.fault(lambda: crash_and_restart(leader))

    def roll(node: int) -> None:
        cluster.terminate(node)
        phases.note(f"node {node} stopped")
        cluster.restart(node)
        phases.note(f"node {node} rejoined")
        stack.wait_fanout_settled(timeout=90)
        phases.note("fanout settled")

    phases.begin("rolling restart")
    for node in sorted(cluster.nodes):
        ledger.fault(lambda node=node: roll(node))

    phases.begin("two down")
    down = sorted(cluster.nodes)[1:]
    figures: dict[str, float] = {}

    def two_down() -> None:
        figures["killed_at"] = time.monotonic()
        for node in down:
            cluster.kill(node)
        wait_until(lambda: any(r.status == 503 and r.at > figures["killed_at"]
                               for p in producers for r in p.refusals),
                   "ingest answering 503 with two brokers down", timeout=60)
        phases.note(f"nodes {down} killed, ingest answered 503")
        cluster.nodes[down[0]].launch()  # two of three again: writes are taken
        back_at, before = time.monotonic(), accepted()
        wait_until(lambda: accepted() > before + 10, "ingest accepting again", timeout=120)
        figures["accepting_after"] = time.monotonic() - back_at
        phases.note(f"node {down[0]} started, ingest accepting again")
        cluster.nodes[down[1]].launch()
        for node in down:
            cluster.wait_rejoined(node, timeout=180)
        phases.note(f"nodes {down} rejoined")
        stack.wait_fanout_settled(timeout=90)
        phases.note("fanout settled")

    ledger.fault(two_down)
    phases.begin("after")
    time.sleep(2.0)
    intake_events = stop_load(producers, intake)
    pauses = phases.longest_pauses(receiver, paths)
    duplicates = phases.duplicates(receiver, paths)
    phases.note(f"load stopped; pauses {pauses}, duplicates {duplicates}")

    refusals = [r for p in producers for r in p.refusals]
    unavailable = [r for r in refusals if r.status == 503 and r.at > figures["killed_at"]]
    assert unavailable and all(r.code == "unavailable" and "Kafka" in r.detail
                               for r in unavailable), unavailable[:3]
    statuses = sorted({r.status for r in refusals})

    report = ledger.check(stack.url("eventlog"), timeout=180, fault=(
        "three brokers (replication 3, min.insync.replicas 2), "
        f"{accepted()} events over HTTP (2x3 producers retrying with one Idempotency-Key "
        f"each) and {intake_events} through the Kafka intake, 10 endpoints (1 failing): "
        f"SIGKILL of a follower (node {follower}), of the events leader (node {leader}, "
        f"{'also' if leader_was_controller else 'not'} the active controller), each "
        f"restarted {DOWN_SECONDS:g} s later; a rolling restart (SIGTERM); two of three "
        f"killed (ingest answered 503 until one was back, then accepted again after "
        f"{figures['accepting_after']:.1f} s); "
        f"refused tries {statuses} ({len(refusals)}); per phase, longest pause in "
        "deliveries and duplicate deliveries: " + ", ".join(
            f"{name} {seconds:g} s, {duplicates[name]}" for name, seconds in pauses.items())))
    for name in ("eventlog", "fanout", "ingest"):
        assert stack.running(name), f"{name} died: {stack.processes[name].log_tail()}"
    assert report.events == len(ledger.published)
