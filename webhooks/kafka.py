"""confluent-kafka producer, consumer and admin factories with the platform's defaults."""

from __future__ import annotations

from typing import Any

from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from webhooks.settings import Settings


def create_producer(settings: Settings, **overrides: Any) -> Producer:
    """An idempotent producer that waits for every in-sync replica (``acks=all``)."""
    config: dict[str, Any] = {
        **settings.kafka_client_config(),
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "compression.type": "lz4",
        "message.timeout.ms": 30000,
        # The Java client's (and aiokafka's) partitioner, so that a key lands in the same
        # partition whichever service produced it (e.g. delivery tasks by endpoint id).
        "partitioner": "murmur2_random",
    }
    config.update(overrides)
    return Producer(config)


def create_consumer(settings: Settings, group: str, **overrides: Any) -> Consumer:
    """A consumer whose offsets the caller commits itself, after the outcome is durable.

    ``group`` is suffixed to the topic prefix so that deployments sharing a cluster
    under different prefixes never share a consumer group.
    """
    config: dict[str, Any] = {
        **settings.kafka_client_config(),
        "group.id": f"{settings.topic_prefix}.{group}",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
    }
    config.update(overrides)
    return Consumer(config)


def end_offsets(consumer: Consumer, topic: str, timeout: float = 30.0) -> dict[int, int]:
    """The high watermark (the next offset to be written) of every partition of ``topic``;
    raises KafkaException while the topic is missing or has no partitions yet."""
    metadata = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
    if metadata is None or metadata.error is not None or not metadata.partitions:
        raise KafkaException(f"topic {topic} is missing")
    return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)[1]
            for p in sorted(metadata.partitions)}


def create_admin(settings: Settings) -> AdminClient:
    return AdminClient(settings.kafka_client_config())


def kafka_reachable(settings: Settings, timeout: float = 3.0) -> bool:
    """True when the cluster answers a metadata request within ``timeout`` seconds."""
    try:
        create_admin(settings).list_topics(timeout=timeout)
        return True
    except KafkaException:
        return False


def close_producer(producer: Producer, timeout: float = 10.0) -> None:
    """Deliver what is queued (bounded by ``timeout``), drop the rest, release the client.

    Anything still queued after the timeout was never acknowledged to a caller, so
    dropping it loses nothing acknowledged. Without ``close`` the client's threads keep
    reconnecting to the broker until the object happens to be garbage-collected.
    """
    producer.flush(timeout)
    producer.purge()
    producer.poll(0)  # serve the purged messages' delivery callbacks
    producer.close()


def produce_sync(producer: Producer, topic: str, value: bytes | None, key: bytes | None = None,
                 headers: list[tuple[str, bytes]] | None = None, timeout: float = 30.0) -> None:
    """Produce one message and block until the broker acknowledged it (or raise)."""
    outcome: list[Any] = []

    def on_delivery(err: Any, msg: Any) -> None:
        outcome.append(err)

    producer.produce(topic, value=value, key=key, headers=headers, on_delivery=on_delivery)
    producer.flush(timeout)
    if not outcome:
        raise KafkaException(f"no acknowledgement from Kafka for {topic} within {timeout}s")
    if outcome[0] is not None:
        raise KafkaException(outcome[0])


def poll_batch(consumer: Consumer, max_messages: int, timeout: float) -> list[Message]:
    """Wait up to ``timeout`` for one message, then take whatever else is already there.

    ``Consumer.consume(n, timeout)`` waits for ``n`` messages or the full timeout, which
    would add the timeout to every claim's round trip when traffic is light.
    """
    first = consumer.poll(timeout)
    if first is None:
        return []
    return [first, *consumer.consume(max_messages - 1, 0)]
