"""The broker killed with SIGKILL and restarted while events are produced, delivered and
stored; ends with the ledger check.

The session broker is shared by every test, so this test runs its own broker
(:class:`LocalKafka` on its own port and folder) and its own platform on it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.localdev.kafka_broker import LocalKafka, free_port
from tests.faults.producers import RetryingProducers
from tests.faults.stack import (
    FaultStack,
    add_endpoint,
    fault_settings,
    own_clickhouse,
    probe_until_live,
)
from tests.support.ledger import Ledger
from tests.support.receiver import Receiver

BROKER_DOWN_SECONDS = 3.0


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    if os.environ.get("WEBHOOKS_KAFKA_BOOTSTRAP"):
        pytest.skip("needs a local broker it may kill (WEBHOOKS_KAFKA_BOOTSTRAP names one)")
    own = LocalKafka(tmp_path_factory.mktemp("fault-kafka"), port=free_port())
    own.start()
    yield own
    own.stop()


@pytest.fixture(scope="module")
def own_stack(broker: LocalKafka, clickhouse_base_url: str,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultStack]:
    settings = fault_settings(broker.bootstrap, own_clickhouse(
        clickhouse_base_url, tmp_path_factory.mktemp("broker-fault-clickhouse")))
    platform = FaultStack(settings, tmp_path_factory.mktemp("broker-fault-logs"))
    try:
        for name in ("eventlog", "fanout", "ingest"):
            platform.start(name)
        yield platform
    finally:
        platform.stop_all()


def sigkill(broker: LocalKafka) -> None:
    """No clean shutdown: nothing flushed or handed over by the broker."""
    assert broker.process is not None
    broker.process.kill()
    broker.process.wait(10)
    broker.process = None


def test_the_broker_killed_and_restarted_while_events_flow(
        broker: LocalKafka, own_stack: FaultStack, receiver: Receiver,
        request: pytest.FixtureRequest) -> None:
    own_stack.wait_fanout_settled()
    ledger = Ledger(own_stack.settings, receiver, test=request.node.name,
                    event_prefix="brokerkill")
    add_endpoint(own_stack, ledger, receiver, "/brokerkill/ok")
    add_endpoint(own_stack, ledger, receiver, "/brokerkill/dead", failing=True)
    probe_until_live(own_stack, ledger, receiver)

    own_stack.wait_fanout_committed()  # the fresh broker's offsets topic is ready

    producers = RetryingProducers(ledger, lambda: own_stack.url("ingest"), threads=4,
                                  per_thread=30, pause=0.02).start()
    producers.wait_accepted(30)
    accepted_at_kill = producers.accepted

    def outage() -> None:
        # The fault lasts until the fanout is back in a stable group: the restarted
        # coordinator no longer knows its member, so its commits fail until it rejoins,
        # and what it consumed meanwhile is consumed again.
        sigkill(broker)
        time.sleep(BROKER_DOWN_SECONDS)
        broker.start()  # the same broker, port and folder
        own_stack.wait_fanout_settled()

    ledger.fault(outage)
    producers.join(timeout=180)
    assert accepted_at_kill < 120, "the kill came too late to prove anything"

    report = ledger.check(own_stack.url("eventlog"), timeout=180, fault=(
        f"SIGKILL of the broker after {accepted_at_kill} of 120 events got their 2xx, "
        f"restarted {BROKER_DOWN_SECONDS:g} s later (the fault ends once the fanout's group "
        f"is stable again); 4 producers retrying with the same Idempotency-Key "
        f"({producers.failed_tries} failed tries)"))
    for name in ("eventlog", "fanout", "ingest"):
        assert own_stack.running(name), f"{name} died with the broker: " + \
            Path(own_stack.processes[name].log_path).read_text()[-2000:]
    assert report.events == len(ledger.published)
