"""Producers that keep publishing through a fault, as a careful client does: each event
is posted with its own Idempotency-Key until some answer is a 2xx; and a producer that
writes to ingest's Kafka intake."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
from confluent_kafka import KafkaError, Message

from tests.support.ledger import Ledger, TopicFollower
from webhooks.envelope import Envelope
from webhooks.kafka import create_producer
from webhooks.topics import Topics


@dataclass(frozen=True)
class Refusal:
    """A try that got no 2xx: its status (0: no answer) and problem code and detail."""

    at: float  # time.monotonic()
    status: int
    code: str = ""
    detail: str = ""


class RetryingProducers:
    """``threads`` producers posting ``per_thread`` events each to ingest (or, with
    ``per_thread=None``, until :meth:`stop`), one at a time, each retried with the same
    Idempotency-Key (connection errors, 409, 5xx) until a 2xx.

    ``ingest_url()`` is asked before every try: a restarted ingest listens elsewhere.
    Every 2xx envelope goes into the ledger; :attr:`tries` counts every request sent and
    :attr:`refusals` keeps every try without a 2xx.
    """

    def __init__(self, ledger: Ledger, ingest_url: Callable[[], str], threads: int = 4,
                 per_thread: int | None = 40, api_key: str = "key-acme",
                 pause: float = 0.0) -> None:
        self.ledger = ledger
        self.ingest_url = ingest_url
        self.per_thread = per_thread
        self.api_key = api_key
        self.pause = pause
        self.accepted = 0
        self.tries = 0
        self.failed_tries = 0
        self.refusals: list[Refusal] = []
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._produce, args=(n,), daemon=True)
                         for n in range(threads)]

    def start(self) -> RetryingProducers:
        for thread in self._threads:
            thread.start()
        return self

    def wait_accepted(self, count: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while self.accepted < count:
            assert time.monotonic() < deadline, f"only {self.accepted} events accepted"
            time.sleep(0.02)

    def stop(self, timeout: float = 120.0) -> None:
        """Publish nothing new; wait until every event begun got its 2xx."""
        self._stopping.set()
        self.join(timeout)

    def join(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            assert not thread.is_alive(), "a producer never got its events accepted"

    def _produce(self, thread: int) -> None:
        headers = {"Authorization": f"Bearer {self.api_key}"}
        with httpx.Client(timeout=10.0) as client:
            n = -1
            while not self._stopping.is_set():
                n += 1
                if self.per_thread is not None and n >= self.per_thread:
                    return
                key = f"{self.ledger.test}-{self.api_key}-{thread}-{n}"
                body = {"type": f"{self.ledger.event_prefix}.created",
                        "data": {"object": {"producer": thread, "n": n}}}
                envelope = self._post_until_2xx(client, key, body, headers)
                self.ledger.accepted(envelope)
                with self._lock:
                    self.accepted += 1
                if self.pause:
                    time.sleep(self.pause)

    def _post_until_2xx(self, client: httpx.Client, key: str, body: dict[str, object],
                        headers: dict[str, str]) -> dict[str, object]:
        while True:
            with self._lock:
                self.tries += 1
            try:
                answer = client.post(f"{self.ingest_url()}/v1/events", json=body,
                                     headers={**headers, "Idempotency-Key": key})
                if answer.is_success:
                    return answer.json()
                # Anything else must be retryable: a 4xx here would be a bug in the test.
                assert answer.status_code in (409, 500, 502, 503), answer.text
                problem = answer.json() if "json" in answer.headers.get(
                    "content-type", "") else {}
                refusal = Refusal(time.monotonic(), answer.status_code,
                                  problem.get("code", ""), problem.get("detail", ""))
            except httpx.TransportError as exc:  # ingest is down or restarting
                refusal = Refusal(time.monotonic(), 0, type(exc).__name__, str(exc))
            with self._lock:
                self.failed_tries += 1
                self.refusals.append(refusal)
            time.sleep(0.1)


class IntakeWriter:
    """Writes events to ingest's Kafka intake (``<prefix>.ingest``) at ``rate`` a second
    until :meth:`stop`, as a producer that publishes straight to Kafka does: without ids
    (ingest derives each from the message's position), keyed by tenant, ``acks=all``.

    :attr:`acknowledged` holds the numbers of the messages Kafka acknowledged;
    :meth:`settle` finds their events on the events topic and puts them in the ledger.
    """

    def __init__(self, ledger: Ledger, rate: float = 10.0,
                 tenants: tuple[str, ...] = ("acme", "globex")) -> None:
        self.ledger = ledger
        self.rate = rate
        self.tenants = tenants
        self.topics = Topics.from_settings(ledger.settings)
        self.type = f"{ledger.event_prefix}.intake"
        self.written = 0
        self.acknowledged: set[int] = set()
        self.failed: list[str] = []
        self._producer = create_producer(ledger.settings.kafka)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._write, daemon=True)

    def start(self) -> IntakeWriter:
        self._thread.start()
        return self

    def stop(self, timeout: float = 60.0) -> None:
        """Write nothing new; wait for Kafka's answer on everything written."""
        self._stopping.set()
        self._thread.join(timeout)
        assert self._producer.flush(timeout) == 0, "intake writes still unanswered"

    def _write(self) -> None:
        started = time.monotonic()
        n = 0
        while not self._stopping.is_set():
            due = started + n / self.rate
            if (wait := due - time.monotonic()) > 0:
                time.sleep(wait)
            tenant = self.tenants[n % len(self.tenants)]

            def delivered(err: KafkaError | None, _: Message, n: int = n) -> None:
                if err is None:
                    self.acknowledged.add(n)
                else:
                    self.failed.append(str(err))

            self._producer.produce(self.topics.ingest, key=tenant.encode(), value=json.dumps({
                "type": self.type, "tenant": tenant, "data": {"object": {"n": n}}}).encode(),
                on_delivery=delivered)
            self._producer.poll(0)
            self.written = n = n + 1

    def settle(self, timeout: float = 120.0) -> int:
        """Wait until every acknowledged message is an event on the events topic (exactly
        one id per message, whatever ingest went through), put every event the intake
        made in the ledger; return how many."""
        events = TopicFollower(self.ledger.settings, self.topics.events)
        ids: dict[int, set[str]] = {}
        try:
            deadline = time.monotonic() + timeout
            while True:
                for _, _, value, _ in events.read():
                    envelope = Envelope.from_json(value)
                    if envelope.type == self.type:
                        ids.setdefault(envelope.data["object"]["n"], set()).add(envelope.id)
                        self.ledger.accepted(envelope)
                missing = self.acknowledged - set(ids)
                if not missing or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
        finally:
            events.close()
        assert not missing, f"{len(missing)} intake messages acknowledged by Kafka never " \
                            f"became events, e.g. {sorted(missing)[:5]}"
        assert all(len(found) == 1 for found in ids.values()), "a re-read made a second event"
        return len(ids)


def stop_load(producers: list[RetryingProducers], intake: IntakeWriter) -> int:
    """Stop every HTTP producer and the intake writer, each waiting for the answers to
    what it began, then settle the intake's events into the ledger; how many it made."""
    for producer in producers:
        producer.stop()
    intake.stop()
    return intake.settle()
