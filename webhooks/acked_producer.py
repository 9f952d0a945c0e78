"""A confluent-kafka producer whose writes are futures resolved by the broker's acknowledgement.

librdkafka runs delivery callbacks only inside ``poll()``/``flush()``; a dedicated poll
thread calls ``poll`` continuously and resolves a :class:`concurrent.futures.Future`
per message. Threads wait on the future directly; asyncio code awaits
``asyncio.wrap_future(future)``, which hops back to its loop thread-safely.

Every write is bounded: ``message.timeout.ms`` makes librdkafka fail a message it could
not deliver in time (broker down), so callers never wait forever.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException, Message

from webhooks.kafka import close_producer, create_producer
from webhooks.settings import Settings

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True)
class Acknowledged:
    """Where the broker stored a message, and how long the write took."""

    topic: str
    partition: int
    offset: int
    latency: float


class ProduceFailed(KafkaException):
    """The broker did not acknowledge a write (down, timed out, or refused it)."""


class AckedProducer:
    """One producer shared by a process's HTTP handlers and intake thread."""

    def __init__(self, settings: Settings, timeout: float) -> None:
        self.timeout = timeout
        self._producer = create_producer(settings, **{
            "message.timeout.ms": int(timeout * 1000),
            # Callers wait for each ack; under load librdkafka batches what queues up
            # while earlier requests are in flight anyway.
            "linger.ms": 1,
            # Fail fast and surface broker outages as errors on the message.
            "socket.connection.setup.timeout.ms": max(1000, int(timeout * 1000)),
        })
        self._closing = threading.Event()
        self._poller = threading.Thread(target=self._poll_forever, name="producer-poll",
                                        daemon=True)
        self._poller.start()

    def produce(self, topic: str, value: bytes | None, *, key: bytes | None = None,
                partition: int | None = None, headers: Headers | None = None
                ) -> Future[Acknowledged]:
        """Queue one message; the future resolves on acknowledgement or fails with ProduceFailed."""
        future: Future[Acknowledged] = Future()
        started = time.perf_counter()

        def on_delivery(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                future.set_exception(ProduceFailed(err))
            else:
                future.set_result(Acknowledged(msg.topic(), msg.partition(), msg.offset(),
                                               time.perf_counter() - started))

        kwargs = {"key": key, "headers": headers, "on_delivery": on_delivery}
        if partition is not None:
            kwargs["partition"] = partition
        for attempt in range(2):
            try:
                self._producer.produce(topic, value, **kwargs)
                break
            except BufferError:
                if attempt:
                    future.set_exception(ProduceFailed("the local produce queue is full"))
                else:  # let the poll thread drain deliveries, then try once more
                    self._producer.poll(0.5)
            except KafkaException as exc:
                future.set_exception(ProduceFailed(exc.args[0] if exc.args else str(exc)))
                break
        return future

    def _poll_forever(self) -> None:
        while not self._closing.is_set():
            self._producer.poll(0.05)

    def close(self, timeout: float = 10.0) -> None:
        """Deliver what is queued (bounded), then stop the poll thread."""
        self._closing.set()
        self._poller.join(timeout)
        close_producer(self._producer, timeout)

