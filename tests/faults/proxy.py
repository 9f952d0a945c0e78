"""A stand-in for a Kubernetes Service in front of ingest replicas: a tiny round-robin HTTP
proxy that sends each request to one of the replicas whose ``/healthz`` answered 200 at
its last probe (a readiness probe every ``period`` seconds; one failure takes a replica
out), and records what each replica answered."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

from tests.support.receiver import write_answer

RELAYED = ("content-type", "retry-after", "idempotent-replayed")


@dataclass(frozen=True)
class Forwarded:
    """One request the proxy sent to a replica: its answer's status, or 0 and the error
    when none came (refused, reset)."""

    backend: str
    started: float  # time.monotonic()
    ended: float
    status: int
    error: str = ""


class ReadinessProxy:
    """Round-robin over the ready ones of ``backends()`` (asked at every probe: a rollout
    adds and removes replicas)."""

    def __init__(self, backends: Callable[[], list[str]], period: float = 0.2) -> None:
        self.backends = backends
        self.period = period
        self.ready: list[str] = []
        self.forwarded: list[Forwarded] = []
        self.unready_answers = 0
        """Requests answered 503 by the proxy itself: no replica was ready."""
        self._lock = threading.Lock()
        self._turn = 0
        self._stopping = threading.Event()
        self._clients = threading.local()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> ReadinessProxy:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 (http.server naming)
                proxy._relay(self)

            def do_GET(self) -> None:  # noqa: N802
                proxy._relay(self)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        threading.Thread(target=self._probe, daemon=True).start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()

    def wait_ready(self, count: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.ready) < count:
            assert time.monotonic() < deadline, f"only {self.ready} ready"
            time.sleep(0.05)

    def _probe(self) -> None:
        with httpx.Client(timeout=1.0) as client:
            while not self._stopping.is_set():
                ready = []
                for backend in self.backends():
                    try:
                        if client.get(f"{backend}/healthz").status_code == 200:
                            ready.append(backend)
                    except httpx.HTTPError:
                        pass
                self.ready = ready
                self._stopping.wait(self.period)

    def _pick(self) -> str | None:
        with self._lock:
            ready = self.ready
            if not ready:
                return None
            self._turn += 1
            return ready[self._turn % len(ready)]

    def _relay(self, handler: BaseHTTPRequestHandler) -> None:
        body = handler.rfile.read(int(handler.headers.get("content-length", 0)))
        backend = self._pick()
        if backend is None:
            with self._lock:
                self.unready_answers += 1
            write_answer(handler, 503, {"content-type": "application/problem+json"},
                         json.dumps({"status": 503, "code": "no_ready_replica",
                                     "detail": "no ingest replica is ready"}).encode())
            return
        client = getattr(self._clients, "client", None)
        if client is None:
            client = self._clients.client = httpx.Client(timeout=30.0)
        headers = {name: value for name, value in handler.headers.items()
                   if name.lower() not in ("host", "content-length", "connection")}
        started = time.monotonic()
        try:
            answer = client.request(handler.command, f"{backend}{handler.path}",
                                    content=body, headers=headers)
        except httpx.HTTPError as exc:
            self._record(Forwarded(backend, started, time.monotonic(), 0,
                                   f"{type(exc).__name__}: {exc}"))
            write_answer(handler, 502, {"content-type": "application/problem+json"},
                         json.dumps({"status": 502, "code": "bad_gateway",
                                     "detail": f"{backend}: {exc}"}).encode())
            return
        self._record(Forwarded(backend, started, time.monotonic(), answer.status_code))
        write_answer(handler, answer.status_code,
                     {name: answer.headers[name] for name in RELAYED if name in answer.headers},
                     answer.content)

    def _record(self, forwarded: Forwarded) -> None:
        with self._lock:
            self.forwarded.append(forwarded)

