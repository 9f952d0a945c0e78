"""Reading topics back in tests, through a real consumer."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

from confluent_kafka import Consumer, Message

from webhooks.settings import Settings


def read_topic(settings: Settings, topic: str, *, expect: int | None = None,
               timeout: float = 20.0, idle: float = 2.0,
               until: Callable[[list[Message]], bool] | None = None) -> list[Message]:
    """Every message on ``topic`` from the beginning.

    Stops once ``expect`` messages arrived or ``until`` holds (and fails after
    ``timeout``), or, with neither given, after ``idle`` seconds without new messages.
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
