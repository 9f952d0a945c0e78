"""One eventlog app per test module (its own topics and ClickHouse database), sink running."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from services.eventlog.app import create_app
from webhooks.settings import Settings

ACME = {"Authorization": "Bearer key-acme"}
GLOBEX = {"Authorization": "Bearer key-globex"}
ADMIN = {"Authorization": "Bearer key-admin"}


@pytest.fixture(scope="module")
def eventlog_settings(settings: Settings) -> Settings:
    """Short sink batches so tests see rows quickly."""
    return settings.model_copy(update={"sink_batch_wait": 0.1, "sink_batch_size": 500})


@pytest.fixture(scope="module")
def api(eventlog_settings: Settings) -> Iterator[TestClient]:
    """The eventlog app with its lifespan running (so the sink thread consumes)."""
    with TestClient(create_app(eventlog_settings)) as client:
        yield client
