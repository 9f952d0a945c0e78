"""Test harness for the fanout worker: real HTTP receivers on loopback, the real worker
as a subprocess (``python -m webhooks.cli serve fanout``), endpoints and events
written to the real broker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from webhooks.endpoints import Endpoint, EndpointSecret, new_endpoint_id
from webhooks.envelope import Envelope, format_timestamp, utcnow
from webhooks.kafka import create_producer, produce_sync
from webhooks.localkafka import free_port
from webhooks.settings import Settings
from webhooks.signing import generate_secret
from webhooks.topics import Topics

ROOT = Path(__file__).resolve().parents[3]


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


def ok(_: int) -> tuple[int, dict[str, str], float]:
    return 200, {}, 0.0


@dataclass
class Receiver:
    """A threaded HTTP server on loopback recording every request, per path behaviour."""

    host: str = "127.0.0.1"
    requests: list[Received] = field(default_factory=list)
    behaviours: dict[str, Behaviour] = field(default_factory=dict)
    _counts: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 (http.server naming)
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with receiver._lock:
                    receiver.requests.append(Received(
                        self.path, {k.lower(): v for k, v in self.headers.items()},
                        body, time.monotonic()))
                    n = receiver._counts[self.path] = receiver._counts.get(self.path, 0) + 1
                status, headers, delay = receiver.behaviours.get(self.path, ok)(n)
                if delay:
                    time.sleep(delay)
                reply = b'{"received":true}'
                try:
                    self.send_response(status)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("content-length", str(len(reply)))
                    self.end_headers()
                    self.wfile.write(reply)
                except OSError:
                    pass  # the client gave up (timeout); nothing to answer

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer((self.host, 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

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


class Platform:
    """Writes endpoints and events the way the eventlog and ingest services do."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topics = Topics.from_settings(settings)
        self._producer: Producer = create_producer(settings)

    def endpoint(self, url: str, events: list[str], tenant: str = "acme",
                 secrets: list[EndpointSecret] | None = None, **fields: Any) -> Endpoint:
        now = format_timestamp(utcnow())
        endpoint = Endpoint(id=new_endpoint_id(), tenant=tenant, url=url, events=events,
                            secrets=secrets or [EndpointSecret(secret=generate_secret())],
                            created=now, updated=now, **fields)
        self.put_endpoint(endpoint)
        return endpoint

    def put_endpoint(self, endpoint: Endpoint) -> None:
        produce_sync(self._producer, self.topics.endpoints, endpoint.to_json(),
                     key=endpoint.id.encode())

    def delete_endpoint(self, endpoint_id: str) -> None:
        produce_sync(self._producer, self.topics.endpoints, None, key=endpoint_id.encode())

    def event(self, type: str, tenant: str = "acme", **data: Any) -> Envelope:
        envelope = Envelope.create(type=type, tenant=tenant, data={"object": data},
                                   api_version=self.settings.api_version)
        produce_sync(self._producer, self.topics.events, envelope.to_json(),
                     key=tenant.encode())
        return envelope

    def events(self, envelopes: list[Envelope]) -> None:
        """Publish many at once (one flush)."""
        for envelope in envelopes:
            self._producer.produce(self.topics.events, envelope.to_json(),
                                   key=envelope.tenant.encode())
        assert self._producer.flush(30) == 0


def settings_env(settings: Settings) -> dict[str, str]:
    """The ``WEBHOOKS_*`` environment that reproduces ``settings`` in a subprocess."""
    env: dict[str, str] = {}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if isinstance(value, dict):
            text = ",".join(f"{k}:{v}" for k, v in value.items())
        elif isinstance(value, tuple | list):
            text = ",".join(map(str, value))
        else:
            text = str(value)
        env[f"WEBHOOKS_{name.upper()}"] = text
    return env


class WorkerProcess:
    """``webhooks serve fanout`` in a subprocess, with its log in a file."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.settings = settings.model_copy(update={"fanout_port": free_port()})
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, wait: float = 90.0) -> WorkerProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("WEBHOOKS_")}
        env.update(settings_env(self.settings))
        env["PYTHONPATH"] = str(ROOT)
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "webhooks.cli", "serve", "fanout"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.wait_healthy(wait)
        return self

    def wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.settings.fanout_port}/healthz"
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"worker exited: {self.log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.3)
        raise TimeoutError(f"worker not healthy: {self.log_path.read_text()[-3000:]}")

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.settings.fanout_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.read().decode()

    def kill(self) -> None:
        """``kill -9``: no shutdown, no final commit."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


def partition_of(key: str, partitions: int) -> int:
    """The partition the worker's (aiokafka) producer puts ``key`` in."""
    from aiokafka.partitioner import murmur2

    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions
