"""Fixtures for the ingest service: apps with their lifespan running, against the real broker."""

from __future__ import annotations

import json
from collections.abc import Iterator
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


def envelopes_on(settings: Settings, topic: str, *, until_id: str,
                 marker: str | None = None) -> list[dict]:
    """Envelopes on ``topic`` (those whose ``data.marker`` is ``marker``, if given),
    read until the event ``until_id`` arrived, plus a short idle period for stragglers."""
    from tests.support.kafka import read_topic

    def seen(messages: list) -> bool:
        return any(json.loads(m.value())["id"] == until_id for m in messages)

    read_topic(settings, topic, until=seen, timeout=30.0)
    messages = read_topic(settings, topic, idle=1.0)  # again, whole, to catch stragglers
    found = []
    for message in messages:
        document = json.loads(message.value())
        document["_key"] = message.key()
        if marker is None or document["data"].get("marker") == marker:
            found.append(document)
    return found
