"""A slow endpoint's backlog waits in Kafka, not in the worker's memory (real broker,
real worker process, loopback receivers)."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable

import httpx
import pytest

from services.localdev.service_process import ServiceProcess
from tests.services.fanout.harness import Platform
from tests.support.kafka import read_topic
from tests.support.receiver import Receiver
from webhooks.delivery import DeliveryTask
from webhooks.envelope import Envelope
from webhooks.settings import Settings
from webhooks.topics import ensure_topics

MAX_QUEUED = 2


@pytest.fixture(scope="module")
def settings(make_settings: Callable[..., Settings]) -> Settings:
    """One attempt in flight and two queued per endpoint; attempts time out after 1 s."""
    module_settings = make_settings(endpoint_max_in_flight=1, endpoint_max_queued=MAX_QUEUED,
                                    delivery_timeout=1.0)
    ensure_topics(module_settings)
    return module_settings


def test_a_slow_endpoints_backlog_is_parked_in_the_first_tier_and_delivered_later(
        worker: ServiceProcess, platform: Platform, receiver: Receiver,
        settings: Settings) -> None:
    recovered = threading.Event()

    def slow_until_recovered(_: int) -> tuple[int, dict[str, str], float]:
        return (200, {}, 0.0) if recovered.is_set() else (200, {}, 3.0)

    slow = platform.endpoint(receiver.on("/slow", slow_until_recovered), ["*"],
                             tenant="backlogco")
    platform.endpoint(receiver.url("/fast"), ["*"], tenant="backlogco")
    time.sleep(2)
    events = [Envelope.create(type="order.created", tenant="backlogco",
                              data={"object": {"n": n}}, api_version=settings.api_version)
              for n in range(10)]
    platform.events(events)

    # The healthy endpoint is not held back by the slow one's backlog.
    fast = receiver.wait_for("/fast", len(events), timeout=30)
    assert {r.event_id for r in fast} == {e.id for e in events}

    # What did not fit the slow endpoint's queue went to the first retry tier, due after
    # that tier's delay, still as attempt 1 with no history: no attempt was made for it.
    first_tier = platform.topics.retry(platform.topics.retry_tiers[0])

    def parked(messages: list) -> list[DeliveryTask]:  # type: ignore[type-arg]
        tasks = [DeliveryTask.from_json(m.value()) for m in messages]
        return [t for t in tasks if t.endpoint_id == slow.id and t.attempt == 1]

    tasks = parked(read_topic(settings, first_tier, until=lambda ms: len(parked(ms)) >= 5))
    assert all(t.history == [] and t.not_before for t in tasks)
    metrics = httpx.get(f"{worker.url}/metrics", timeout=5).text
    deferred = re.search(r"^webhooks_deliveries_deferred_total (\S+)$", metrics, re.M)
    assert deferred and float(deferred.group(1)) >= 5

    # Once the endpoint answers quickly again, every event reaches it, none is lost.
    recovered.set()
    deadline = time.monotonic() + 60
    while {r.event_id for r in receiver.at("/slow")} != {e.id for e in events}:
        assert time.monotonic() < deadline, "the parked backlog was not delivered"
        time.sleep(0.5)
    dead = [DeliveryTask.from_json(m.value())
            for m in read_topic(settings, platform.topics.dlq, idle=2.0)]
    assert [t for t in dead if t.endpoint_id == slow.id] == []
