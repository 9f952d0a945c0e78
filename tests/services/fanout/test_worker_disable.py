"""Disabling an endpoint writes it back to the compacted topic without undoing changes
the worker's view had not read yet (real broker; the view is held back on purpose)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

import pytest

from services.fanout.deliverer import Deliverer
from services.fanout.dispatch import EndpointDispatcher
from services.fanout.endpoint_view import EndpointView
from services.fanout.metrics import FanoutMetrics
from services.fanout.worker import FanoutWorker
from tests.support.kafka import read_topic
from tests.support.records import endpoint
from webhooks.acked_producer import AckedProducer
from webhooks.endpoints import Endpoint, EndpointSecret
from webhooks.envelope import Envelope
from webhooks.settings import Settings
from webhooks.signing import generate_secret
from webhooks.target_policy import TargetPolicy
from webhooks.topics import Topics


class LaggingView(EndpointView):
    """An endpoints view that applies records only while ``flowing`` is set."""

    def __init__(self, settings: Settings, topic: str) -> None:
        super().__init__(settings.kafka, topic)
        self.flowing = threading.Event()
        self.flowing.set()

    def apply(self, endpoint_id: str, value: bytes | None) -> None:
        self.flowing.wait()
        super().apply(endpoint_id, value)


@pytest.fixture
async def view(settings: Settings) -> AsyncIterator[LaggingView]:
    lagging = LaggingView(settings, Topics.from_settings(settings).endpoints)
    lagging.start()
    assert await asyncio.to_thread(lagging.wait_ready, 30)
    yield lagging
    lagging.flowing.set()
    lagging.stop()


def make_worker(settings: Settings, view: EndpointView) -> FanoutWorker:
    producer = AckedProducer(settings.kafka)

    async def publish(topic: str, key: bytes, value: bytes | None) -> None:
        await asyncio.to_thread(producer.send, topic, value, key=key)

    deliverer = Deliverer(TargetPolicy.create(("127.0.0.0/8",), production=False), timeout=5.0,
                          keyring=settings.secrets_key)
    return FanoutWorker(
        settings, view, deliverer, publish, EndpointDispatcher(10, 10),
        FanoutMetrics(in_flight=lambda: 0, waiting=lambda: 0, lag=lambda: [],
                      unacked=lambda: {}))


def last_record(settings: Settings, endpoint_id: str) -> bytes | None:
    messages = read_topic(settings, Topics.from_settings(settings).endpoints, idle=2.0)
    return [m.value() for m in messages if m.key() == endpoint_id.encode()][-1]


def disabled_notices(settings: Settings, endpoint_id: str) -> list[Envelope]:
    events = [Envelope.from_json(m.value())
              for m in read_topic(settings, Topics.from_settings(settings).events, idle=2.0)]
    return [e for e in events
            if e.type == "endpoint.disabled" and e.data["object"]["id"] == endpoint_id]


async def seen_endpoint(settings: Settings, view: LaggingView) -> tuple[Endpoint, Endpoint]:
    """A new endpoint on the topic, and the copy the view applied (which a disable starts from)."""
    record = endpoint("acme", ["*"])
    AckedProducer(settings.kafka).send(Topics.from_settings(settings).endpoints,
                                       record.to_json(), key=record.id.encode())
    assert await asyncio.to_thread(view.catch_up, 20)
    decided_on = view.get(record.id)
    assert decided_on is not None
    return record, decided_on


async def write_unseen(settings: Settings, view: LaggingView, record: Endpoint,
                       value: bytes | None) -> None:
    """Write ``record``'s id to the topic while the view is held back (so it lags)."""
    view.flowing.clear()
    await asyncio.to_thread(AckedProducer(settings.kafka).send,
                            Topics.from_settings(settings).endpoints, value,
                            key=record.id.encode())


async def disable_while_lagging(worker: FanoutWorker, view: LaggingView,
                                decided_on: Endpoint) -> None:
    """Disable as the worker would, then let the view catch up while it waits."""
    disabling = asyncio.create_task(worker.disable(decided_on, "endpoint answered 410 Gone"))
    await asyncio.sleep(1.0)
    assert not disabling.done(), "the disable was written before the view caught up"
    view.flowing.set()
    await asyncio.wait_for(disabling, 20)


async def test_a_disable_does_not_bring_back_a_deleted_endpoint(
        settings: Settings, view: LaggingView) -> None:
    record, decided_on = await seen_endpoint(settings, view)

    await write_unseen(settings, view, record, None)  # deleted through the API
    await disable_while_lagging(make_worker(settings, view), view, decided_on)

    assert last_record(settings, record.id) is None  # still deleted
    assert view.get(record.id) is None
    assert disabled_notices(settings, record.id) == []


async def test_a_disable_keeps_a_secret_rotated_meanwhile(
        settings: Settings, view: LaggingView) -> None:
    record, decided_on = await seen_endpoint(settings, view)

    rotated = record.model_copy(update={
        "secrets": [EndpointSecret(secret=generate_secret()), *record.secrets]})
    await write_unseen(settings, view, record, rotated.to_json())
    await disable_while_lagging(make_worker(settings, view), view, decided_on)

    written = last_record(settings, record.id)
    assert written is not None
    stored = Endpoint.from_json(written)
    assert stored.disabled and stored.disabled_reason == "endpoint answered 410 Gone"
    assert [s.secret for s in stored.secrets] == [s.secret for s in rotated.secrets]
    assert len(disabled_notices(settings, record.id)) == 1
