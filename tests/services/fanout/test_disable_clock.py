"""The auto-disable clock survives a ``kill -9`` of the worker: the streak is on Kafka."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest

from services.fanout.endpoint_health import SavedStreak
from services.localdev.service_process import ServiceProcess
from tests.services.fanout.conftest import worker_log
from tests.services.fanout.harness import Platform
from tests.support.kafka import read_topic
from tests.support.receiver import Receiver
from webhooks.delivery import AttemptRecord
from webhooks.endpoints import Endpoint
from webhooks.settings import Settings
from webhooks.topics import Topics, ensure_topics

DISABLE_AFTER = 6.0  # seconds of nothing but failures; the streak is saved every 0.6 s


@pytest.fixture(scope="module")
def settings(make_settings: Callable[..., Settings]) -> Settings:
    module_settings = make_settings(disable_after=DISABLE_AFTER, retry_schedule="1m")
    ensure_topics(module_settings)
    return module_settings


@pytest.fixture
def steady_events(platform: Platform) -> Iterator[None]:
    """An order event every 0.2 s until the test ends: first attempts keep coming."""
    stop = threading.Event()

    def publish() -> None:
        while not stop.wait(0.2):
            platform.events([platform.event("order.created")])

    thread = threading.Thread(target=publish, daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join(5)


def attempts_of(settings: Settings, endpoint_id: str,
                until: Callable[[list[AttemptRecord]], bool]) -> list[AttemptRecord]:
    def mine(messages: list) -> list[AttemptRecord]:  # type: ignore[type-arg]
        records = [AttemptRecord.from_json(m.value()) for m in messages]
        return [r for r in records if r.endpoint_id == endpoint_id]

    return mine(read_topic(settings, Topics.from_settings(settings).attempts, timeout=90,
                           until=lambda messages: until(mine(messages))))


def test_a_restarted_worker_continues_the_failure_streak_and_disables_on_time(
        platform: Platform, receiver: Receiver, settings: Settings,
        steady_events: None) -> None:
    failing = platform.endpoint(receiver.on("/down", lambda _: (500, {}, 0.0)), ["order.*"])
    log = worker_log(settings, "disable-clock")
    first = ServiceProcess("fanout", settings, log).start()
    try:
        saved = read_topic(settings, platform.topics.endpoint_health, timeout=60,
                           until=lambda ms: any(m.key() == failing.id.encode() for m in ms))
    finally:
        first.kill()
    killed_at = time.time()
    streak = SavedStreak.from_json(saved[-1].value())
    # Restart only once the streak, counted from its saved start, has lasted long enough.
    time.sleep(max(0.0, streak.since + DISABLE_AFTER + 0.5 - time.time()))

    second = ServiceProcess("fanout", settings, log).start()
    try:
        attempts = attempts_of(settings, failing.id, until=lambda records: any(
            r.outcome == "endpoint_disabled" for r in records))
    finally:
        second.stop()

    after_restart = sorted((r for r in attempts if r.timestamp.timestamp() > killed_at),
                           key=lambda r: r.timestamp)
    outcomes = [r.outcome for r in after_restart]
    first_disabled = outcomes.index("endpoint_disabled")
    # Attempts already in flight when the first failure was recorded may still end as
    # "retrying" (timestamps are start times): at most endpoint_max_in_flight - 1 of them.
    assert first_disabled < settings.endpoint_max_in_flight, outcomes[:20]
    # Without the saved streak, the new worker would start the clock again and retry for
    # DISABLE_AFTER seconds before disabling.
    waited = after_restart[first_disabled].timestamp - after_restart[0].timestamp
    assert waited < timedelta(seconds=DISABLE_AFTER / 2), (waited, outcomes[:20])
    assert platform_endpoint_disabled(settings, failing.id)
    # The disable clears the saved streak, so a re-enabled endpoint starts afresh.
    health = read_topic(settings, platform.topics.endpoint_health,
                        until=lambda ms: any(m.key() == failing.id.encode() and m.value() is None
                                             for m in ms))
    assert [m.value() for m in health if m.key() == failing.id.encode()][-1] is None


def platform_endpoint_disabled(settings: Settings, endpoint_id: str) -> bool:
    """Whether the endpoints topic's latest record for ``endpoint_id`` is disabled."""
    records = [m for m in read_topic(settings, Topics.from_settings(settings).endpoints)
               if m.key() == endpoint_id.encode()]
    return bool(records) and Endpoint.from_json(records[-1].value()).disabled
