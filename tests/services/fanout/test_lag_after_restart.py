"""The lag a restarted worker reports for partitions it has nothing new to read on."""

from __future__ import annotations

import time

from services.localdev.service_process import ServiceProcess
from tests.services.fanout.conftest import worker_log
from tests.services.fanout.harness import Platform
from tests.support.receiver import Receiver
from webhooks.envelope import Envelope
from webhooks.settings import Settings


def settled_lag(worker: ServiceProcess, topics: tuple[str, ...],
                timeout: float = 30.0) -> dict[str, float]:
    """The lag once every topic is assigned and none is behind, or the last seen."""
    deadline = time.monotonic() + timeout
    while True:
        lag = {topic: value for topic, value
               in worker.metric_by_label("webhooks_consumer_lag", "topic").items()
               if topic in topics}
        if (set(lag) == set(topics) and not any(lag.values())) or time.monotonic() > deadline:
            return lag
        time.sleep(0.5)


def test_a_restarted_worker_reports_no_lag_for_work_committed_before_it(
        platform: Platform, receiver: Receiver, settings: Settings) -> None:
    platform.endpoint(receiver.url("/lag"), ["*"], tenant="lagco")
    events = [Envelope.create(type="order.created", tenant="lagco", data={"object": {"n": n}},
                              api_version=settings.api_version) for n in range(20)]
    watched = (platform.topics.events, platform.topics.deliveries)
    log = worker_log(settings)

    first = ServiceProcess("fanout", settings, log).start()
    try:
        platform.events(events)
        receiver.wait_for("/lag", len(events), timeout=60)
        assert settled_lag(first, watched) == dict.fromkeys(watched, 0.0)
    finally:
        first.stop()

    # Nothing new arrives: the second worker's lag is what the first left, nothing.
    second = ServiceProcess("fanout", settings, log).start()
    try:
        assert settled_lag(second, watched) == dict.fromkeys(watched, 0.0)
    finally:
        second.stop()
