"""The one way to write to Kafka and wait for the broker's acknowledgement.

librdkafka runs delivery callbacks only inside ``poll()``/``flush()``; a dedicated poll
thread calls ``poll`` continuously and resolves a :class:`concurrent.futures.Future`
per message. Threads wait on the future (or call :meth:`AckedProducer.send`);
:meth:`AckedProducer.produce_all` writes a long stream and waits for all of it; asyncio
code awaits :meth:`AckedProducer.produce_async`, whose acknowledgements reach the event
loop in batches (one wake-up of the loop per poll, however many writes it settled: the
fanout writes several records per delivery), or :meth:`AckedProducer.produce_each` for
a whole batch of writes at once (ingest: one future for a request batch or an intake
poll instead of one per write).

Every write is bounded: ``message.timeout.ms`` makes librdkafka fail a message it could
not deliver in time (broker down), so callers never wait forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
import time
import weakref
from collections.abc import Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, NamedTuple

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from webhooks.kafka import KafkaConnection, close_producer, create_producer

Headers = list[tuple[str, bytes]]

# How much longer than librdkafka's own message timeout a waiter gives the callback.
CALLBACK_GRACE = 5.0


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
    """One producer shared by a process's threads (HTTP handlers, intake, API requests).

    ``timeout`` bounds every write (``message.timeout.ms``); ``overrides`` are further
    librdkafka settings. Keep a reference while waiting on its futures: a producer that
    nobody references any more stops its poll thread.
    """

    def __init__(self, connection: KafkaConnection, timeout: float = 30.0,
                 **overrides: Any) -> None:
        self.timeout = timeout
        self._producer = create_producer(connection, **{
            "message.timeout.ms": int(timeout * 1000),
            # Callers wait for each ack; under load librdkafka batches what queues up
            # while earlier requests are in flight anyway.
            "linger.ms": connection.linger_ms,
            # Fail fast and surface broker outages as errors on the message.
            "socket.connection.setup.timeout.ms": max(1000, int(timeout * 1000)),
            **overrides,
        })
        self._closing = threading.Event()
        # The thread holds the client, not this object, so that a producer dropped without
        # close() (a test's one-off write) is collected and its thread ends.
        self._settled: list[_Settled] = []
        self._poller = threading.Thread(target=_poll_until,
                                        args=(self._producer, self._closing, self._settled),
                                        name="producer-poll", daemon=True)
        self._poller.start()
        weakref.finalize(self, self._closing.set)

    def produce(self, topic: str, value: bytes | None, *, key: bytes | None = None,
                partition: int | None = None, headers: Headers | None = None,
                queue_wait: float = 0.5) -> Future[Acknowledged]:
        """Queue one message; the future resolves on acknowledgement or fails with ProduceFailed.

        When the local queue is full, waits up to ``queue_wait`` seconds for room.
        """
        future: Future[Acknowledged] = Future()
        started = time.perf_counter()

        def on_delivery(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                future.set_exception(ProduceFailed(err))
            else:
                future.set_result(Acknowledged(msg.topic(), msg.partition(), msg.offset(),
                                               time.perf_counter() - started))

        kwargs: dict[str, Any] = {"key": key, "headers": headers, "on_delivery": on_delivery}
        if partition is not None:
            kwargs["partition"] = partition
        deadline = time.monotonic() + queue_wait
        while True:
            try:
                self._producer.produce(topic, value, **kwargs)
                return future
            except BufferError:
                if time.monotonic() >= deadline:
                    future.set_exception(ProduceFailed("the local produce queue is full"))
                    return future
                self._producer.poll(0.05)  # serve deliveries, which makes room
            except KafkaException as exc:
                future.set_exception(ProduceFailed(exc.args[0] if exc.args else str(exc)))
                return future

    def produce_async(self, topic: str, value: bytes | None, *, key: bytes | None = None,
                      headers: Headers | None = None) -> asyncio.Future[None]:
        """Queue one message from asyncio code: a future of the running loop, resolved on
        acknowledgement or failed with ProduceFailed. Never blocks the loop: a full local
        queue fails the write at once (the caller retries)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        settled = self._settled

        def on_delivery(err: KafkaError | None, msg: Message) -> None:
            settled.append((loop, future, err))  # handed to the loop after this poll

        try:
            self._producer.produce(topic, value, key=key, headers=headers,
                                   on_delivery=on_delivery)
        except BufferError:
            future.set_exception(ProduceFailed("the local produce queue is full"))
        except KafkaException as exc:
            future.set_exception(ProduceFailed(exc.args[0] if exc.args else str(exc)))
        return future

    def produce_each(self, writes: Sequence[Write]) -> asyncio.Future[list[Exception | None]]:
        """Queue every write from asyncio code; one future of the running loop resolves
        once all are settled, with each write's failure (ProduceFailed) or None, in order.

        The batch form of :meth:`produce_async` for a request batch or an intake poll:
        one wake-up of the loop and no future per write. Never blocks the loop: a full
        local queue fails the writes that did not fit (the caller retries them).
        """
        batch = _Batch(asyncio.get_running_loop(), len(writes))
        for index, write in enumerate(writes):
            kwargs: dict[str, Any] = {"key": write.key,
                                      "on_delivery": functools.partial(batch.delivered, index)}
            if write.partition is not None:
                kwargs["partition"] = write.partition
            if write.headers is not None:
                kwargs["headers"] = write.headers
            try:
                self._producer.produce(write.topic, write.value, **kwargs)
            except BufferError:
                batch.failed(index, ProduceFailed("the local produce queue is full"))
            except KafkaException as exc:
                batch.failed(index, ProduceFailed(exc.args[0] if exc.args else str(exc)))
        return batch.future

    def send(self, topic: str, value: bytes | None, *, key: bytes | None = None,
             partition: int | None = None, headers: Headers | None = None) -> Acknowledged:
        """Produce one message and block until the broker acknowledged it; raises ProduceFailed."""
        future = self.produce(topic, value, key=key, partition=partition, headers=headers,
                              queue_wait=self.timeout)
        try:
            return future.result(self.timeout + CALLBACK_GRACE)
        except TimeoutError as exc:
            raise ProduceFailed(f"no acknowledgement from Kafka for {topic} "
                                f"within {self.timeout}s") from exc

    def produce_all(self, topic: str, records: Iterable[tuple[bytes | None, bytes | None]]
                    ) -> int:
        """Produce every (key, value) of ``records`` to ``topic``, waiting for room in the
        local queue as needed; return how many once the broker acknowledged them all.

        Raises ProduceFailed if any write failed; the stream stops at the first failure
        seen. Only writes in flight are tracked, so a long stream takes no more memory
        than the producer's queue.
        """
        tally = _Tally()
        for key, value in records:
            tally.track(self.produce(topic, value, key=key, queue_wait=self.timeout))
            if tally.failed:
                break
        return tally.wait(self.timeout + CALLBACK_GRACE)

    def close(self, timeout: float = 10.0) -> None:
        """Deliver what is queued (bounded), then stop the poll thread."""
        self._closing.set()
        self._poller.join(timeout)
        close_producer(self._producer, timeout)


_Settled = tuple[asyncio.AbstractEventLoop, "asyncio.Future[None]", KafkaError | None]


def _poll_until(producer: Producer, closing: threading.Event, settled: list[_Settled]) -> None:
    """Serve delivery callbacks until ``closing`` is set; hand the asyncio writes each poll
    settled to their loops, one call per loop."""
    while not closing.is_set():
        producer.poll(0.05)
        if settled:
            batch = settled[:]
            del settled[:len(batch)]
            by_loop: dict[asyncio.AbstractEventLoop, list[_Settled]] = {}
            for item in batch:
                by_loop.setdefault(item[0], []).append(item)
            for loop, items in by_loop.items():
                # A closed loop raises RuntimeError: nobody awaits these writes any more.
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(_settle, items)


def _settle(items: list[_Settled]) -> None:
    """In the event loop: resolve the futures of acknowledged (or failed) writes."""
    for _, future, err in items:
        if future.done():
            continue  # cancelled meanwhile
        if err is None:
            future.set_result(None)
        else:
            future.set_exception(ProduceFailed(err))


class Write(NamedTuple):
    """One message of :meth:`AckedProducer.produce_each`."""

    topic: str
    value: bytes | None
    key: bytes | None = None
    partition: int | None = None
    headers: Headers | None = None


class _Batch:
    """The outcomes of one :meth:`AckedProducer.produce_each` call, settled in the poll
    thread (or at once, for a write the local queue refused)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, size: int) -> None:
        self._loop = loop
        self.future: asyncio.Future[list[Exception | None]] = loop.create_future()
        self._failures: list[Exception | None] = [None] * size
        self._pending = size
        self._lock = threading.Lock()
        if size == 0:
            self.future.set_result([])

    def delivered(self, index: int, err: KafkaError | None, _: Message) -> None:
        """librdkafka's delivery callback for write ``index``."""
        self.failed(index, ProduceFailed(err) if err is not None else None)

    def failed(self, index: int, failure: Exception | None) -> None:
        """Settle write ``index``; the last one hands the outcomes to the loop."""
        with self._lock:
            self._failures[index] = failure
            self._pending -= 1
            last = self._pending == 0
        if last:
            # A closed loop raises RuntimeError: nobody awaits these writes any more.
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._resolve)

    def _resolve(self) -> None:
        if not self.future.done():  # else cancelled meanwhile
            self.future.set_result(self._failures)


class _Tally:
    """Counts a stream's writes and how many are settled; keeps the first failure."""

    def __init__(self) -> None:
        self._settled = threading.Condition()
        self._written = 0
        self._pending = 0
        self._failure: BaseException | None = None

    @property
    def failed(self) -> bool:
        """True once a write failed."""
        return self._failure is not None

    def track(self, future: Future[Acknowledged]) -> None:
        """Count ``future`` in until it settles."""
        with self._settled:
            self._written += 1
            self._pending += 1
        future.add_done_callback(self._settle)  # runs in the poll thread

    def _settle(self, future: Future[Acknowledged]) -> None:
        with self._settled:
            self._pending -= 1
            if self._failure is None:
                self._failure = future.exception()
            self._settled.notify_all()

    def wait(self, timeout: float) -> int:
        """How many were written, once all are acknowledged; raises on a failure or timeout."""
        with self._settled:
            if not self._settled.wait_for(lambda: self._pending == 0, timeout):
                raise ProduceFailed(f"{self._pending} writes not acknowledged within {timeout}s")
            if self._failure is not None:
                raise self._failure
            return self._written
