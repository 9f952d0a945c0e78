"""At-least-once across ``kill -9``: a ledger of every (event, endpoint) pair."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from services.localdev.service_process import ServiceProcess
from tests.services.fanout.conftest import worker_log
from tests.services.fanout.harness import Platform
from tests.support.kafka import read_topic
from tests.support.receiver import Receiver
from webhooks.delivery import DeliveryTask
from webhooks.envelope import Envelope
from webhooks.settings import Settings
from webhooks.topics import ensure_topics

EVENTS = 200


def wait_for_every_event(receiver: Receiver, path: str, wanted: set[str],
                         timeout: float = 120.0) -> None:
    """Until ``path`` has received each of ``wanted`` at least once."""
    deadline = time.monotonic() + timeout
    while (missing := wanted - {r.event_id for r in receiver.at(path)}) and \
            time.monotonic() < deadline:
        time.sleep(0.1)
    assert not missing, f"{path}: {len(missing)} of {len(wanted)} events never arrived"


@pytest.fixture(scope="module")
def settings(make_settings: Callable[..., Settings]) -> Settings:
    # Few deliveries in flight per endpoint keep the stream busy long enough to kill it.
    module_settings = make_settings(endpoint_max_in_flight=2)
    ensure_topics(module_settings)
    return module_settings


def test_kill_9_mid_stream_then_restart_delivers_every_pair_or_dead_letters_it(
        platform: Platform, receiver: Receiver, settings: Settings) -> None:
    def slow(_: int) -> tuple[int, dict[str, str], float]:
        return 200, {}, 0.05

    def failing(_: int) -> tuple[int, dict[str, str], float]:
        return 500, {}, 0.0

    endpoints = {
        "/a": platform.endpoint(receiver.on("/a", slow), ["*"]),
        "/b": platform.endpoint(receiver.on("/b", slow), ["order.*"]),
        "/dead": platform.endpoint(receiver.on("/dead", failing), ["*"]),
    }
    events = [Envelope.create(type="order.created", tenant="acme", data={"object": {"n": n}},
                              api_version=settings.api_version) for n in range(EVENTS)]

    log: Path = worker_log(settings)
    first = ServiceProcess("fanout", settings, log).start()
    try:
        platform.events(events)
        receiver.wait_for("/a", EVENTS // 5, timeout=60)
        first.kill()
    finally:
        first.kill()
    delivered_before_kill = len(receiver.at("/a")) + len(receiver.at("/b"))
    assert delivered_before_kill < 2 * EVENTS, "the kill came too late to prove anything"

    second = ServiceProcess("fanout", settings, log).start()
    try:
        wanted = {e.id for e in events}
        # Request counts include the duplicates the crash causes; wait for the ids.
        wait_for_every_event(receiver, "/a", wanted)
        wait_for_every_event(receiver, "/b", wanted)

        def dead_ids(messages: list) -> set[str]:  # type: ignore[type-arg]
            tasks = [DeliveryTask.from_json(m.value()) for m in messages]
            return {t.event.id for t in tasks if t.endpoint_id == endpoints["/dead"].id}

        dead = dead_ids(read_topic(settings, platform.topics.dlq, timeout=120,
                                   until=lambda ms: dead_ids(ms) >= wanted))
    finally:
        second.stop()

    # The ledger: nothing missing.
    assert {r.event_id for r in receiver.at("/a")} >= wanted
    assert {r.event_id for r in receiver.at("/b")} >= wanted
    assert dead >= wanted
    # Duplicates are allowed, and carry the event's id as webhook-id.
    assert all(r.headers["webhook-id"] == r.event_id for r in receiver.requests)
