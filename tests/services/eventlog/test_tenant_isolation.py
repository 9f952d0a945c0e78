"""Another tenant's key changes nothing: checked on Kafka, not only by the 404 it gets.

This module has topics of its own, so "nothing produced" means the topics hold only what
the owning tenant's own requests wrote.
"""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from tests.services.eventlog.conftest import ACME, GLOBEX
from tests.support.eventlog import eventually, make_event, publish_events
from tests.support.kafka import read_topic
from webhooks.settings import Settings
from webhooks.topics import Topics

URL = "https://hooks.example.com/in"


def records_of(settings: Settings, topic: str, key: str) -> list[Any]:
    """Every record keyed ``key`` on ``topic`` (read until it has been idle for 2 s)."""
    return [m for m in read_topic(settings, topic) if m.key() == key.encode()]


def test_another_tenants_requests_produce_nothing_rotate_nothing_redeliver_nothing(
        api: TestClient, eventlog_settings: Settings) -> None:
    topics = Topics.from_settings(eventlog_settings)
    created = api.post("/v1/endpoints", json={"url": URL, "events": ["*"]}, headers=ACME)
    assert created.status_code == 201, created.text
    endpoint_id = created.json()["id"]
    secrets_before = api.get(f"/v1/endpoints/{endpoint_id}/secret", headers=ACME).json()
    event = publish_events(eventlog_settings, [make_event("acme", "order.shipped")])[0]
    eventually(lambda: api.get(f"/v1/events/{event.id}", headers=ACME).status_code == 200)

    endpoint = f"/v1/endpoints/{endpoint_id}"
    attempts = [
        ("GET", endpoint, None), ("PATCH", endpoint, {"url": "https://evil.example.com/"}),
        ("PATCH", endpoint, {"disabled": True}), ("DELETE", endpoint, None),
        ("POST", f"{endpoint}/rotate-secret", None), ("GET", f"{endpoint}/secret", None),
        ("POST", f"{endpoint}/test", None), ("POST", f"{endpoint}/verify", None),
        ("GET", f"{endpoint}/attempts", None),
        ("POST", f"{endpoint}/recover", {"since": "2020-01-01T00:00:00Z"}),
        ("GET", f"/v1/events/{event.id}", None),
        ("POST", f"/v1/events/{event.id}/redeliver", None),
        ("POST", f"/v1/events/{event.id}/redeliver", {"endpoint_id": endpoint_id}),
    ]
    for method, path, body in attempts:
        response = api.request(method, path, json=body, headers=GLOBEX)
        assert response.status_code == 404, (method, path, response.text)
    # Naming the other tenant outright is refused before anything is looked up.
    response = api.post(f"/v1/events/{event.id}/redeliver", params={"tenant": "acme"},
                        headers=GLOBEX)
    assert response.status_code == 403, response.text

    # Nothing reached Kafka: the endpoint has only its creation record, and no task exists.
    assert len(records_of(eventlog_settings, topics.endpoints, endpoint_id)) == 1
    assert records_of(eventlog_settings, topics.deliveries, endpoint_id) == []
    after = api.get(endpoint, headers=ACME).json()
    assert after["url"] == URL and not after["disabled"]
    assert api.get(f"{endpoint}/secret", headers=ACME).json() == secrets_before

    # The same checks do see a change when the owner makes one.
    assert api.post(f"/v1/events/{event.id}/redeliver", headers=ACME).status_code == 202
    tasks = records_of(eventlog_settings, topics.deliveries, endpoint_id)
    assert len(tasks) == 1
