"""Ordered delivery and pause, end to end: real broker, real worker processes (one of them
killed with ``kill -9`` mid-stream), real receivers."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator

import pytest

from services.localdev.service_process import ServiceProcess
from tests.services.fanout.conftest import worker_log
from tests.services.fanout.harness import Platform
from tests.support.receiver import Receiver
from webhooks.settings import Settings


def first_receipts(receiver: Receiver, path: str, type: str = "order.updated") -> list[str]:
    """Ids of the events of ``type`` in the order each was first received on ``path``."""
    seen: dict[str, None] = {}
    for request in receiver.at(path):
        event = json.loads(request.body)
        if event["type"] == type:
            seen.setdefault(event["id"], None)
    return list(seen)


def probe(platform: Platform, receiver: Receiver, *paths: str) -> None:
    """Publish probe events until each path got one: the worker's view has the endpoints
    and its consumer group is joined."""
    deadline = time.monotonic() + 60
    while not all(first_receipts(receiver, path, "probe.sent") for path in paths):
        assert time.monotonic() < deadline, "no probe arrived"
        platform.event("probe.sent")
        time.sleep(1.0)


def wait_until(check: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not reached in time"
        time.sleep(0.1)


@pytest.fixture
def own_worker(settings: Settings) -> Iterator[list[ServiceProcess]]:
    """Worker processes the test starts (and kills); stopped at the end."""
    started: list[ServiceProcess] = []
    yield started
    for process in started:
        process.stop()


def start_worker(settings: Settings, started: list[ServiceProcess], name: str) -> ServiceProcess:
    process = ServiceProcess("fanout", settings, worker_log(settings, name)).start()
    started.append(process)
    return process


def test_an_ordered_endpoint_gets_events_in_append_order_through_failures_and_a_kill_9(
        platform: Platform, receiver: Receiver, settings: Settings,
        own_worker: list[ServiceProcess]) -> None:
    receiver.on("/ordered", lambda n: (503 if n % 3 == 0 else 200, {}, 0.0))
    platform.endpoint(receiver.url("/ordered"), ["*"], ordered=True)
    platform.endpoint(receiver.url("/unordered"), ["*"])
    worker = start_worker(settings, own_worker, "ordered-1")
    probe(platform, receiver, "/unordered", "/ordered")

    published = [platform.event("order.updated", n=n) for n in range(24)]
    # The unordered endpoint of the same tenant is not held up by the ordered one's retries.
    wait_until(lambda: len(first_receipts(receiver, "/unordered")) == 24, timeout=30)
    wait_until(lambda: len(first_receipts(receiver, "/ordered")) >= 9)
    worker.kill()
    start_worker(settings, own_worker, "ordered-2")

    expected = [e.id for e in published]
    wait_until(lambda: len(first_receipts(receiver, "/ordered")) == len(expected), timeout=120)
    assert first_receipts(receiver, "/ordered") == expected
    # Every third request failed and was retried in place before the next event went out.
    ids = [event["id"] for event in map(json.loads, (r.body for r in receiver.at("/ordered")))
           if event["type"] == "order.updated"]
    assert len(ids) > len(expected)
    for position, event_id in enumerate(ids):
        earlier = expected[:expected.index(event_id)]
        assert set(earlier) <= set(ids[:position]), f"{event_id} overtook an earlier event"


def test_a_paused_endpoint_gets_nothing_until_resumed_then_everything(
        platform: Platform, receiver: Receiver, settings: Settings,
        own_worker: list[ServiceProcess]) -> None:
    start_worker(settings, own_worker, "paused")
    unordered = platform.endpoint(receiver.url("/paused"), ["*"])
    ordered = platform.endpoint(receiver.url("/paused-ordered"), ["*"], ordered=True)
    probe(platform, receiver, "/paused", "/paused-ordered")

    for endpoint in (unordered, ordered):
        platform.put_endpoint(endpoint.model_copy(update={"paused": True}))
    time.sleep(1.5)  # the worker's view has the pause
    published = [platform.event("order.updated", n=n) for n in range(20)]
    time.sleep(4.0)  # longer than the first retry tier (1 s): held tasks came back, held again
    assert first_receipts(receiver, "/paused") == []
    assert first_receipts(receiver, "/paused-ordered") == []

    for endpoint in (unordered, ordered):
        platform.put_endpoint(endpoint.model_copy(update={"paused": False}))
    expected = [e.id for e in published]
    wait_until(lambda: len(first_receipts(receiver, "/paused")) == len(expected))
    wait_until(lambda: len(first_receipts(receiver, "/paused-ordered")) == len(expected))
    assert sorted(first_receipts(receiver, "/paused")) == sorted(expected)
    assert first_receipts(receiver, "/paused-ordered") == expected  # in order, too
