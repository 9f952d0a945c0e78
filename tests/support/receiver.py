"""A real HTTP receiver on loopback for tests: records every request it gets and
answers each path the way a test tells it to (status, headers, delay)."""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    """One request a receiver got."""

    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic()

    @property
    def event_id(self) -> str:
        return json.loads(self.body)["id"]


Behaviour = Callable[[int], tuple[int, dict[str, str], float]]
"""``behaviour(n)`` for the n-th request (1-based) on a path -> (status, headers, delay)."""
Answer = Callable[[Received], bytes]
"""``answer(request)`` -> the body to answer a request on a path with."""
DEFAULT_ANSWER = b'{"received":true}'


def ok(_: int) -> tuple[int, dict[str, str], float]:
    return 200, {}, 0.0


@dataclass
class Receiver:
    """A threaded HTTP server on loopback recording every request, per path behaviour."""

    host: str = "127.0.0.1"
    port: int = 0
    tls: ssl.SSLContext | None = None
    """Server-side TLS context; the receiver speaks https when set."""
    requests: list[Received] = field(default_factory=list)
    behaviours: dict[str, Behaviour] = field(default_factory=dict)
    answers: dict[str, Answer] = field(default_factory=dict)
    _counts: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 (http.server naming)
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                received = Received(self.path, {k.lower(): v for k, v in self.headers.items()},
                                    body, time.monotonic())
                with receiver._lock:
                    receiver.requests.append(received)
                    n = receiver._counts[self.path] = receiver._counts.get(self.path, 0) + 1
                status, headers, delay = receiver.behaviours.get(self.path, ok)(n)
                if delay:
                    time.sleep(delay)
                answer = receiver.answers.get(self.path)
                reply = answer(received) if answer else DEFAULT_ANSWER
                write_answer(self, status, headers, reply)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        self._server.daemon_threads = True
        if self.tls is not None:
            self._server.socket = self.tls.wrap_socket(self._server.socket, server_side=True)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def url(self, path: str) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{self.host}:{self.port}{path}"

    def on(self, path: str, behaviour: Behaviour) -> str:
        """Set the behaviour of ``path``; returns its URL."""
        self.behaviours[path] = behaviour
        return self.url(path)

    def at(self, path: str) -> list[Received]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def wait_for(self, path: str, count: int, timeout: float = 30.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.at(path)
            if len(got) >= count:
                return got
            time.sleep(0.05)
        raise TimeoutError(f"{path}: {len(self.at(path))} requests, wanted {count}")


def write_answer(handler: BaseHTTPRequestHandler, status: int, headers: dict[str, str],
                 body: bytes) -> None:
    """Answer ``handler``'s request with ``status``, ``headers`` and ``body``; a client
    that gave up meanwhile (its timeout) gets nothing."""
    try:
        handler.send_response(status)
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.send_header("content-length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
    except OSError:
        pass
