"""Producers that keep publishing through a fault, as a careful client does: each event
is posted with its own Idempotency-Key until some answer is a 2xx."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import httpx

from tests.support.ledger import Ledger


class RetryingProducers:
    """``threads`` producers posting ``per_thread`` events each to ingest, one at a time,
    each retried with the same Idempotency-Key (connection errors, 409, 5xx) until a 2xx.

    ``ingest_url()`` is asked before every try: a restarted ingest listens elsewhere.
    Every 2xx envelope goes into the ledger; :attr:`tries` counts every request sent.
    """

    def __init__(self, ledger: Ledger, ingest_url: Callable[[], str], threads: int = 4,
                 per_thread: int = 40, api_key: str = "key-acme",
                 pause: float = 0.0) -> None:
        self.ledger = ledger
        self.ingest_url = ingest_url
        self.per_thread = per_thread
        self.api_key = api_key
        self.pause = pause
        self.accepted = 0
        self.tries = 0
        self.failed_tries = 0
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

    def join(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            assert not thread.is_alive(), "a producer never got its events accepted"

    def _produce(self, thread: int) -> None:
        headers = {"Authorization": f"Bearer {self.api_key}"}
        with httpx.Client(timeout=10.0) as client:
            for n in range(self.per_thread):
                key = f"{self.ledger.test}-{thread}-{n}"
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
            except httpx.TransportError:
                pass  # ingest is down or restarting
            with self._lock:
                self.failed_tries += 1
            time.sleep(0.1)
