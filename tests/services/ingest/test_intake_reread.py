"""A crash before the intake committed means its messages are read again: nothing doubles."""

from __future__ import annotations

import json
import time
import uuid

from confluent_kafka import Consumer, TopicPartition

from services.ingest.kafka_intake import INTAKE_GROUP
from tests.services.ingest.conftest import running_ingest
from tests.support.kafka import read_topic
from webhooks.acked_producer import AckedProducer
from webhooks.settings import Settings
from webhooks.topics import Topics


def rewind_intake_group(settings: Settings) -> None:
    """What a crash between append and commit amounts to: offsets back at the start."""
    topics = Topics.from_settings(settings)
    consumer = Consumer({**settings.kafka.client_config(),
                         "group.id": f"{settings.topic_prefix}.{INTAKE_GROUP}"})
    try:
        consumer.commit(offsets=[TopicPartition(topics.ingest, n, 0)
                                 for n in range(settings.topic_partitions)],
                        asynchronous=False)
    finally:
        consumer.close()


def test_rereading_intake_messages_after_a_crash_appends_nothing_new(settings: Settings) -> None:
    topics = Topics.from_settings(settings)
    mark = uuid.uuid4().hex
    producer = AckedProducer(settings.kafka)
    for n in range(5):  # no ids: ingest derives them from the message position
        producer.send(topics.ingest, json.dumps(
            {"type": "order.reread", "data": {"marker": mark, "n": n}, "tenant": "acme"}).encode())
    with running_ingest(settings):
        read_topic(settings, topics.events,
                   until=lambda ms: sum(mark.encode() in m.value() for m in ms) >= 5)
    before = read_topic(settings, topics.events, idle=1.0)

    rewind_intake_group(settings)
    with running_ingest(settings) as restarted:
        # The restarted replica reads the five messages again and recognises each one.
        deadline = time.monotonic() + 30
        while duplicates(restarted.get("/metrics").text) < 5 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert duplicates(restarted.get("/metrics").text) == 5

    after = read_topic(settings, topics.events, idle=1.0)
    mine = [json.loads(m.value())["id"] for m in after if mark.encode() in m.value()]
    assert len(mine) == 5 and len(set(mine)) == 5
    assert len(after) == len(before)


def duplicates(metrics: str) -> float:
    for line in metrics.splitlines():
        if line.startswith('webhooks_ingest_duplicate_total{source="kafka"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0
