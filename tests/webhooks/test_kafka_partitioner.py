"""Keys land in the same partition whichever client produced them."""

from __future__ import annotations

from aiokafka.partitioner import murmur2

from webhooks.kafka import create_producer
from webhooks.settings import Settings
from webhooks.topics import Topics


def test_confluent_producers_partition_keys_like_the_faust_worker(settings: Settings) -> None:
    topic = Topics.from_settings(settings).ingest
    producer = create_producer(settings.kafka)
    placed: dict[str, int] = {}

    def on_delivery(err, msg) -> None:  # type: ignore[no-untyped-def]
        assert err is None
        placed[msg.key().decode()] = msg.partition()

    keys = [f"ep_{n:04d}" for n in range(30)]
    for key in keys:
        producer.produce(topic, b"{}", key=key.encode(), on_delivery=on_delivery)
    assert producer.flush(30) == 0
    expected = {key: (murmur2(key.encode()) & 0x7FFFFFFF) % settings.topic_partitions
                for key in keys}
    assert placed == expected
    assert len(set(placed.values())) > 1  # the keys really spread over partitions
