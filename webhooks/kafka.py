"""confluent-kafka producer, consumer and admin factories with the platform's defaults.

Every client is built from a :class:`KafkaConnection` (``settings.kafka``): where the
cluster is, how to authenticate, and the prefix that keeps consumer groups apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient


@dataclass(frozen=True)
class KafkaConnection:
    """How a Kafka client reaches the cluster, and the prefix of its consumer groups."""

    bootstrap: str
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)  # kept out of logs
    ssl_ca_location: str | None = None
    topic_prefix: str = "webhooks"
    linger_ms: float = 1.0
    """How long the platform's acknowledged producers wait to fill a batch
    (``WEBHOOKS_KAFKA_LINGER_MS``)."""

    def client_config(self) -> dict[str, str]:
        """librdkafka connection settings shared by every producer, consumer and admin."""
        config = {
            "bootstrap.servers": self.bootstrap,
            "security.protocol": self.security_protocol,
        }
        if self.sasl_mechanism:
            config["sasl.mechanism"] = self.sasl_mechanism
            config["sasl.username"] = self.sasl_username or ""
            config["sasl.password"] = self.sasl_password or ""
        if self.ssl_ca_location:
            config["ssl.ca.location"] = self.ssl_ca_location
        return config

    def group_id(self, group: str) -> str:
        """``group`` under the topic prefix, so that deployments sharing a cluster under
        different prefixes never share a consumer group."""
        return f"{self.topic_prefix}.{group}"


def create_producer(connection: KafkaConnection, **overrides: Any) -> Producer:
    """An idempotent producer that waits for every in-sync replica (``acks=all``)."""
    config: dict[str, Any] = {
        **connection.client_config(),
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


def create_consumer(connection: KafkaConnection, group: str, **overrides: Any) -> Consumer:
    """A consumer whose offsets the caller commits itself, after the outcome is durable.

    ``group`` is put under the topic prefix (:meth:`KafkaConnection.group_id`).
    """
    config: dict[str, Any] = {
        **connection.client_config(),
        "group.id": connection.group_id(group),
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        # A killed member's partitions move to a restarted or surviving one within ~10 s
        # (librdkafka's default waits 45 s). Heartbeats run in librdkafka's own thread, so
        # a long insert or delivery batch does not count against it (max.poll.interval.ms does).
        "session.timeout.ms": 10000,
        "heartbeat.interval.ms": 3000,
    }
    config.update(overrides)
    return Consumer(config)


def watermarks(consumer: Consumer, topic: str, timeout: float = 30.0
               ) -> dict[int, tuple[int, int]]:
    """The (low, high) watermarks of every partition of ``topic``: the first offset still
    stored and the next offset to be written. Raises KafkaException while the topic is
    missing, has no partitions yet, or a partition has no leader."""
    metadata = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
    if metadata is None or metadata.error is not None or not metadata.partitions:
        raise KafkaException(f"topic {topic} is missing")
    return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)
            for p in sorted(metadata.partitions)}


def end_offsets(consumer: Consumer, topic: str, timeout: float = 30.0) -> dict[int, int]:
    """The high watermark (the next offset to be written) of every partition of ``topic``;
    raises KafkaException while the topic is missing or has no partitions yet."""
    return {p: high for p, (_, high) in watermarks(consumer, topic, timeout).items()}


def create_admin(connection: KafkaConnection) -> AdminClient:
    """An admin client (topic creation and configuration, metadata)."""
    return AdminClient(connection.client_config())


def kafka_reachable(connection: KafkaConnection, timeout: float = 3.0) -> bool:
    """True when the cluster answers a metadata request within ``timeout`` seconds."""
    try:
        create_admin(connection).list_topics(timeout=timeout)
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


def poll_batch(consumer: Consumer, max_messages: int, timeout: float) -> list[Message]:
    """Wait up to ``timeout`` for one message, then take whatever else is already there.

    ``Consumer.consume(n, timeout)`` waits for ``n`` messages or the full timeout, which
    would add the timeout to every claim's round trip when traffic is light.
    """
    first = consumer.poll(timeout)
    if first is None:
        return []
    return [first, *consumer.consume(max_messages - 1, 0)]
