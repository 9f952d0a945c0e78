"""Where the worker sends a rate-limited endpoint's tasks (no broker: a recording publish)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any, cast

from services.fanout.deliverer import Deliverer
from services.fanout.dispatch import EndpointDispatcher
from services.fanout.endpoint_view import EndpointView
from services.fanout.metrics import FanoutMetrics
from services.fanout.worker import FanoutWorker
from tests.support.records import endpoint, event
from webhooks.delivery import DeliveryTask
from webhooks.endpoints import Endpoint
from webhooks.envelope import Envelope, utcnow
from webhooks.settings import Settings


class StaticView:
    """The endpoints a test gives, every one matching every event."""

    def __init__(self, *endpoints: Endpoint) -> None:
        self.endpoints = {e.id: e for e in endpoints}

    def get(self, endpoint_id: str) -> Endpoint | None:
        return self.endpoints.get(endpoint_id)

    def matching(self, envelope: Envelope) -> list[Endpoint]:
        return list(self.endpoints.values())


class RecordingPublish:
    """Keeps each write; it is acknowledged when the test sets ``acked``."""

    def __init__(self) -> None:
        self.written: list[tuple[str, bytes, bytes | None]] = []
        self.acked = asyncio.Event()

    async def __call__(self, topic: str, key: bytes, value: bytes | None,
                       headers: Any = None) -> None:
        self.written.append((topic, key, value))
        await self.acked.wait()


def make_worker(view: StaticView, publish: RecordingPublish,
                dispatcher: EndpointDispatcher) -> FanoutWorker:
    settings = Settings(topic_prefix="p", retry_schedule="1s,2s", retry_jitter=0.0)
    metrics = FanoutMetrics(in_flight=lambda: 0, waiting=lambda: 0, lag=lambda: [],
                            unacked=lambda: {})
    return FanoutWorker(settings, cast(EndpointView, view), cast(Deliverer, None), publish,
                        dispatcher, metrics)


async def test_a_rate_limited_endpoints_task_goes_through_the_deliveries_topic() -> None:
    limited = endpoint("acme", ["*"], rate_limit=5)
    publish = RecordingPublish()
    worker = make_worker(StaticView(limited), publish, EndpointDispatcher(10, 10))
    durable: list[bool] = []

    [task] = worker.fan_out(event("order.created"), on_durable=lambda: durable.append(True))
    for _ in range(5):
        await asyncio.sleep(0)
    # Written keyed by endpoint id, not attempted here; the event waits for the ack.
    assert publish.written == [("p.deliveries", limited.id.encode(), task.to_json())]
    assert durable == []
    publish.acked.set()
    for _ in range(5):
        await asyncio.sleep(0)
    assert durable == [True]


async def test_overflow_of_a_rate_limited_endpoint_is_parked_until_its_queue_drained() -> None:
    limited = endpoint("acme", ["*"], rate_limit=5)
    publish = RecordingPublish()
    publish.acked.set()
    dispatcher = EndpointDispatcher(10, 1)
    worker = make_worker(StaticView(limited), publish, dispatcher)
    hold = asyncio.Event()

    async def held() -> None:
        await hold.wait()

    for _ in range(21):  # one under way, 20 queued
        dispatcher.submit(limited.id, held, rate_limit=5)
    await asyncio.sleep(0)
    task = DeliveryTask.create(event("order.created"), limited.id)
    before = utcnow()
    await worker._defer(task, None, rate_limit=5)
    [(topic, _, value)] = publish.written
    parked = DeliveryTask.from_json(value or b"")
    assert topic == "p.retry.1s"
    # 20 queued at 5 per second: back in 4 s, not after the tier's 1 s.
    assert parked.not_before is not None
    assert before + timedelta(seconds=3.9) <= parked.not_before <= utcnow() + \
        timedelta(seconds=4.1)
    hold.set()
    await dispatcher.close()


async def test_tasks_parked_one_after_another_come_back_spread_at_the_rate() -> None:
    limited = endpoint("acme", ["*"], rate_limit=5)
    other = endpoint("acme", ["*"], rate_limit=5)
    publish = RecordingPublish()
    publish.acked.set()
    dispatcher = EndpointDispatcher(10, 1)
    worker = make_worker(StaticView(limited, other), publish, dispatcher)
    hold = asyncio.Event()

    async def held() -> None:
        await hold.wait()

    for _ in range(21):  # one under way, 20 queued: drained in 4 s
        dispatcher.submit(limited.id, held, rate_limit=5)
    await asyncio.sleep(0)
    before = utcnow()
    for _ in range(3):
        await worker._defer(DeliveryTask.create(event("order.created"), limited.id), None,
                            rate_limit=5)
    await worker._defer(DeliveryTask.create(event("order.created"), other.id), None,
                        rate_limit=5)
    due = [DeliveryTask.from_json(value or b"").not_before for _, _, value in publish.written]
    assert all(d is not None for d in due)
    offsets = [(cast(Any, d) - before).total_seconds() for d in due]
    # One 1/rate apart after the queue's 4 s, instead of all three at 4 s; another
    # endpoint's horizon is its own (nothing queued: at once).
    for got, wanted in zip(offsets, (4.0, 4.2, 4.4, 0.0), strict=True):
        assert wanted - 0.1 <= got <= wanted + 0.1, offsets
    hold.set()
    await dispatcher.close()
