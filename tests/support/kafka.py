"""Reading topics back in tests, through a real consumer."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition

from webhooks.kafka import watermarks
from webhooks.settings import Settings


def read_topic(settings: Settings, topic: str, *, expect: int | None = None,
               timeout: float = 20.0, idle: float = 2.0,
               until: Callable[[list[Message]], bool] | None = None) -> list[Message]:
    """Every message on ``topic`` from the beginning.

    Stops once ``expect`` messages arrived or ``until`` holds (and fails after
    ``timeout``), or, with neither given, after ``idle`` seconds without new messages,
    counted from the group's assignment.
    """
    consumer = Consumer({
        **settings.kafka.client_config(),
        "group.id": f"test-reader-{uuid.uuid4().hex}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    })
    consumer.subscribe([topic])
    messages: list[Message] = []
    deadline = time.monotonic() + timeout
    last_seen = time.monotonic()
    try:
        while time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is not None and not message.error():
                messages.append(message)
                last_seen = time.monotonic()
            elif not consumer.assignment():
                # Joining the group can take longer than ``idle`` on a busy machine: an
                # idle read would then return nothing, and "nothing appended" would pass.
                last_seen = time.monotonic()
            if expect is not None and len(messages) >= expect:
                return messages
            if until is not None and until(messages):
                return messages
            if expect is None and until is None and time.monotonic() - last_seen > idle:
                return messages
        if expect is not None or until is not None:
            raise TimeoutError(f"{topic}: got {len(messages)} messages, wanted {expect or 'more'}")
        return messages
    finally:
        consumer.close()


def read_to_end(settings: Settings, topic: str, timeout: float = 30.0) -> list[Message]:
    """Every message stored on ``topic`` now (up to each partition's end offset), read by
    partition from the beginning: the raw records, as a reader of the broker sees them."""
    consumer = Consumer({
        **settings.kafka.client_config(),
        "group.id": f"test-reader-{uuid.uuid4().hex}",
        "enable.auto.commit": False,
    })
    try:
        ends = {p: high for p, (low, high) in watermarks(consumer, topic, timeout).items()
                if high > low}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        messages: list[Message] = []
        deadline = time.monotonic() + timeout
        while ends:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}: not read to its end within {timeout}s")
            message = consumer.poll(0.2)
            if message is None or message.error():
                continue
            messages.append(message)
            if message.offset() >= ends.get(message.partition(), 0) - 1:
                ends.pop(message.partition(), None)
        return messages
    finally:
        consumer.close()
