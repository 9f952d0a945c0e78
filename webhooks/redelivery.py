"""Queueing delivery tasks outside the normal fan-out: redeliver, recover and test sends.

The tasks go to the deliveries topic, keyed by endpoint id, exactly like the tasks the
fanout creates, so they are delivered, retried and recorded as attempts the same way.
The event keeps its id, so the receiver sees the same ``webhook-id`` again.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from confluent_kafka import KafkaException, Producer

from webhooks.delivery import DeliveryTask, Trigger
from webhooks.endpoints import Endpoint
from webhooks.envelope import Envelope
from webhooks.topics import Topics


class DeliveryQueue:
    """Produces delivery tasks and returns only once Kafka acknowledged every one."""

    def __init__(self, producer: Producer, topics: Topics) -> None:
        self.producer = producer
        self.topics = topics

    def enqueue(self, pairs: Iterable[tuple[Envelope, Endpoint]], trigger: Trigger,
                timeout: float = 30.0) -> list[DeliveryTask]:
        """One task per (event, endpoint) pair; raises if any is not acknowledged."""
        tasks: list[DeliveryTask] = []
        errors: list[Any] = []
        acknowledged = 0

        def on_delivery(err: Any, msg: Any) -> None:
            nonlocal acknowledged
            if err is not None:
                errors.append(err)
            else:
                acknowledged += 1

        for event, endpoint in pairs:
            task = DeliveryTask.create(event, endpoint.id, trigger)
            self.producer.produce(self.topics.deliveries, key=task.key, value=task.to_json(),
                                  on_delivery=on_delivery)
            self.producer.poll(0)  # serve callbacks so the local queue never fills up
            tasks.append(task)
        self.producer.flush(timeout)
        if errors:
            raise KafkaException(errors[0])
        if acknowledged != len(tasks):
            raise KafkaException(f"{len(tasks) - acknowledged} delivery tasks not acknowledged")
        return tasks
