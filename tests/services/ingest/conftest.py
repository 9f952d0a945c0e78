"""Fixtures for the ingest service: apps with their lifespan running, against the real broker."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from fastapi.testclient import TestClient

from services.ingest.app import create_app
from webhooks.settings import Settings

ACME = {"Authorization": "Bearer key-acme"}
GLOBEX = {"Authorization": "Bearer key-globex"}
ADMIN = {"Authorization": "Bearer key-admin"}


@contextmanager
def running_ingest(settings: Settings, **kwargs: object) -> Iterator[TestClient]:
    """One ingest replica (ledger follower, producer, intake) for the duration of the block."""
    with TestClient(create_app(settings, **kwargs)) as client:
        yield client


@pytest.fixture(scope="module")
def ingest(settings: Settings) -> Iterator[TestClient]:
    """A module-wide ingest replica on this module's topics."""
    with running_ingest(settings) as client:
        yield client


@pytest.fixture()
def start_ingest(settings: Settings) -> Callable[..., object]:
    return running_ingest
