"""Queueing delivery tasks outside the fan-out, against the real broker."""

from __future__ import annotations

from services.eventlog.redelivery import DeliveryQueue
from tests.support.kafka import read_topic
from tests.support.records import endpoint, event
from webhooks.acked_producer import AckedProducer
from webhooks.delivery import DeliveryTask
from webhooks.settings import Settings
from webhooks.topics import Topics


def test_a_long_stream_is_produced_whole_and_only_its_first_tasks_are_kept(
        settings: Settings) -> None:
    topics = Topics.from_settings(settings)
    target = endpoint("acme", ["*"])
    events = [event("order.created") for _ in range(50)]
    # A tiny local queue, so that the producer's buffer fills up on the way.
    producer = AckedProducer(settings.kafka, **{"queue.buffering.max.messages": 5})

    queued = DeliveryQueue(producer, topics).enqueue(
        ((e, target) for e in events), "recover", keep=3)

    assert queued.count == 50
    assert [t.event.id for t in queued.first] == [e.id for e in events[:3]]
    on_topic = [DeliveryTask.from_json(m.value())
                for m in read_topic(settings, topics.deliveries, expect=50)]
    assert sorted(t.event.id for t in on_topic) == sorted(e.id for e in events)
    assert {(t.endpoint_id, t.trigger) for t in on_topic} == {(target.id, "recover")}
