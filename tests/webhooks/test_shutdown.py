"""SIGTERM for the HTTP services: /healthz 503 at once, serving on for the delay, then
uvicorn's own exit (without its re-raised signal)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from types import FrameType

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from webhooks.observability import health_router
from webhooks.shutdown import GracefulShutdown


class FakeServer:
    """What GracefulShutdown finds behind uvicorn's SIGTERM handler."""

    def __init__(self) -> None:
        self.should_exit = False
        self.signals: list[int] = []

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.signals.append(sig)
        self.should_exit = True


@pytest.fixture
def server() -> Iterator[FakeServer]:
    fake = FakeServer()
    previous = signal.signal(signal.SIGTERM, fake.handle_exit)
    yield fake
    signal.signal(signal.SIGTERM, previous)


def wait_for(condition, timeout: float = 2.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return bool(condition())


def test_sigterm_fails_readiness_at_once_and_stops_the_server_after_the_delay(
        server: FakeServer) -> None:
    shutdown = GracefulShutdown(delay=0.3)
    shutdown.install()
    app = FastAPI()
    app.include_router(health_router({"ok": lambda: True}, shutdown=shutdown))
    with TestClient(app) as client:
        assert client.get("/healthz").status_code == 200
        os.kill(os.getpid(), signal.SIGTERM)
        assert wait_for(lambda: shutdown.shutting_down)
        started = time.monotonic()
        ready = client.get("/healthz")
        assert (ready.status_code, ready.json()) == (503, {"status": "shutting_down"})
        assert client.get("/livez").status_code == 200  # not a reason to restart it
        assert not server.should_exit  # still serving
        assert wait_for(lambda: server.should_exit)
    assert time.monotonic() - started >= 0.25
    # uvicorn's handler was not called: it would re-raise SIGTERM once stopped (exit 143).
    assert server.signals == []


def test_a_second_sigterm_stops_at_once(server: FakeServer) -> None:
    shutdown = GracefulShutdown(delay=30.0)
    shutdown.install()
    os.kill(os.getpid(), signal.SIGTERM)
    assert wait_for(lambda: shutdown.shutting_down)
    os.kill(os.getpid(), signal.SIGTERM)
    assert wait_for(lambda: server.should_exit)
    assert server.signals == [signal.SIGTERM]
