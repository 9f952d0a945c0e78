"""One eventlog app per test module (its own topics and ClickHouse database), sink running."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from clickhouse_connect.driver.client import Client
from fastapi.testclient import TestClient

from services.eventlog.app import create_app
from services.eventlog.clickhouse import apply_migrations, create_clickhouse_client
from webhooks.settings import Settings

ACME = {"Authorization": "Bearer key-acme"}
GLOBEX = {"Authorization": "Bearer key-globex"}
ADMIN = {"Authorization": "Bearer key-admin"}


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[Client]:
    """A ClickHouse client on this module's database, migrated (for the store tests)."""
    client = create_clickhouse_client(settings.clickhouse_url)
    apply_migrations(client, settings.retention_days)
    yield client


@pytest.fixture(scope="module")
def eventlog_settings(settings: Settings) -> Settings:
    """Short sink batches so tests see rows quickly."""
    return settings.model_copy(update={"sink_batch_wait": 0.1, "sink_batch_size": 500})


@pytest.fixture(scope="module")
def api(eventlog_settings: Settings) -> Iterator[TestClient]:
    """The eventlog app with its lifespan running (so the sink thread consumes)."""
    with TestClient(create_app(eventlog_settings)) as client:
        yield client
