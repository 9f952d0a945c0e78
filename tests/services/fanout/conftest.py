"""Fixtures for the fanout tests: receivers on loopback and a running worker."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.services.fanout.harness import Platform, Receiver, WorkerProcess
from webhooks.settings import Settings


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    server = Receiver().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def platform(settings: Settings) -> Platform:
    return Platform(settings)


@pytest.fixture(scope="module")
def worker(settings: Settings, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[WorkerProcess]:
    log = Path(tmp_path_factory.mktemp("fanout")) / "worker.log"
    process = WorkerProcess(settings, log).start()
    yield process
    process.stop()
