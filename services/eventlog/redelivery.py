"""Queueing delivery tasks outside the normal fan-out: redeliver, recover and test sends.

The tasks go to the deliveries topic, keyed by endpoint id, exactly like the tasks the
fanout creates, so they are delivered, retried and recorded as attempts the same way.
The event keeps its id, so the receiver sees the same ``webhook-id`` again.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from webhooks.acked_producer import AckedProducer
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

    def __init__(self, producer: AckedProducer, topics: Topics) -> None:
        self.producer = producer
        self.topics = topics

    def enqueue(self, pairs: Iterable[tuple[Envelope, Endpoint]], trigger: Trigger, *,
                keep: int) -> QueuedTasks:
        """One task per (event, endpoint) pair; raises ProduceFailed if any is not
        acknowledged (within the producer's timeout).

        ``pairs`` may be a long stream (a recovery of weeks of events): tasks are produced
        as they come and only the first ``keep`` are kept for the answer, so memory stays
        bounded.
        """
        queued = QueuedTasks()

        def tasks() -> Iterator[tuple[bytes, bytes]]:
            for event, endpoint in pairs:
                task = DeliveryTask.create(event, endpoint.id, trigger)
                queued.count += 1
                if len(queued.first) < keep:
                    queued.first.append(task)
                yield task.key, task.to_json()

        self.producer.produce_all(self.topics.deliveries, tasks())
        return queued
