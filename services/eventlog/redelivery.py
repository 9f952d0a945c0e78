"""Queueing delivery tasks outside the normal fan-out: redeliver, recover and test sends.

The tasks go to the deliveries topic, keyed by endpoint id, exactly like the tasks the
fanout creates, so they are delivered, retried and recorded as attempts the same way.
The event keeps its id, so the receiver sees the same ``webhook-id`` again.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaException, Producer

from webhooks.delivery import DeliveryTask, Trigger
from webhooks.endpoints import Endpoint
from webhooks.envelope import Envelope
from webhooks.topics import Topics


@dataclass
class QueuedTasks:
    """What :meth:`DeliveryQueue.enqueue` produced: how many tasks, and the first few."""

    count: int = 0
    first: list[DeliveryTask] = field(default_factory=list)


class DeliveryQueue:
    """Produces delivery tasks and returns only once Kafka acknowledged every one."""

    def __init__(self, producer: Producer, topics: Topics) -> None:
        self.producer = producer
        self.topics = topics

    def enqueue(self, pairs: Iterable[tuple[Envelope, Endpoint]], trigger: Trigger, *,
                keep: int, timeout: float = 30.0) -> QueuedTasks:
        """One task per (event, endpoint) pair; raises if any is not acknowledged.

        ``pairs`` may be a long stream (a recovery of weeks of events): tasks are produced
        as they come and only the first ``keep`` are kept for the answer, so memory stays
        bounded; ``timeout`` applies to the final flush.
        """
        queued = QueuedTasks()
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
            while True:
                try:
                    self.producer.produce(self.topics.deliveries, key=task.key,
                                          value=task.to_json(), on_delivery=on_delivery)
                    break
                except BufferError:  # the local queue is full: let the broker catch up
                    self.producer.poll(0.1)
            self.producer.poll(0)  # serve delivery callbacks as we go
            queued.count += 1
            if len(queued.first) < keep:
                queued.first.append(task)
        self.producer.flush(timeout)
        if errors:
            raise KafkaException(errors[0])
        if acknowledged != queued.count:
            raise KafkaException(f"{queued.count - acknowledged} delivery tasks not acknowledged")
        return queued
