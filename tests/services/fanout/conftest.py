"""Fixtures for the fanout tests: receivers on loopback and a running worker."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.localdev.service_process import ServiceProcess
from tests.services.fanout.harness import Platform
from tests.support.fake_dns import fake_dns  # noqa: F401 (a fixture of the SSRF tests)
from webhooks.settings import Settings


def worker_log(settings: Settings, name: str = "worker") -> Path:
    """Where a worker's output goes: kept after the run, to read when a test fails."""
    folder = Path(tempfile.gettempdir()) / "fanout-test-logs"
    folder.mkdir(exist_ok=True)
    return folder / f"{settings.topic_prefix}-{name}.log"


@pytest.fixture(scope="module")
def platform(settings: Settings) -> Platform:
    return Platform(settings)


@pytest.fixture(scope="module")
def worker(settings: Settings) -> Iterator[ServiceProcess]:
    log = worker_log(settings)
    process = ServiceProcess("fanout", settings, log).start()
    yield process
    process.stop()
