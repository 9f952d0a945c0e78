"""A DLQ replay end to end: the real fanout worker (its own process) gives up on a failing
receiver, the dead task shows in ``GET /v1/dlq``, the receiver is fixed, and
``POST /v1/dlq/replay`` brings the event to it with the same ``webhook-id``."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from standardwebhooks.webhooks import Webhook

from services.localdev.service_process import ServiceProcess
from tests.services.eventlog.conftest import ACME
from tests.support.eventlog import eventually, make_event, publish_events
from tests.support.receiver import Receiver
from webhooks.settings import Settings
from webhooks.topics import ensure_topics

PATH = "/dlq-replay"


@pytest.fixture(scope="module")
def settings(make_settings: Any) -> Settings:
    """One retry tier of 1 s: a failing task is dead-lettered after its second attempt."""
    module_settings = make_settings(retry_schedule="1s")
    ensure_topics(module_settings)
    return module_settings


def test_a_replayed_dead_task_reaches_the_now_healthy_receiver_with_the_same_webhook_id(
        api: TestClient, settings: Settings, receiver: Receiver) -> None:
    healthy = False

    def behaviour(_: int) -> tuple[int, dict[str, str], float]:
        return (200 if healthy else 500), {}, 0.0

    created = api.post("/v1/endpoints", headers=ACME, json={
        "url": receiver.on(PATH, behaviour), "events": ["order.*"]})
    assert created.status_code == 201, created.text
    endpoint, secret = created.json()["id"], created.json()["secret"]
    log = Path(tempfile.gettempdir()) / "fanout-test-logs"
    log.mkdir(exist_ok=True)
    # Started after the endpoint exists: a worker matches only once its endpoints view
    # has caught up, so the event below cannot slip past the new endpoint.
    with ServiceProcess("fanout", settings, log / f"{settings.topic_prefix}-dlq.log"):
        event = publish_events(settings, [make_event("acme", "order.shipped")])[0]
        failed = receiver.wait_for(PATH, 2)
        dead = eventually(lambda: api.get("/v1/dlq", params={"endpoint_id": endpoint},
                                          headers=ACME).json()["data"])
        assert len(dead) == 1
        task = dead[0]
        assert (task["event_id"], task["attempts"], task["last_error"],
                task["last_response_status"], task["reason"]) == (
            event.id, 2, "http_status", 500, "retries exhausted after 2 attempts")
        assert [h["status"] for h in task["history"]] == ["failed", "failed"]

        healthy = True
        replayed = api.post("/v1/dlq/replay", json={"ids": [task["id"]]}, headers=ACME)
        assert replayed.status_code == 202, replayed.text
        assert replayed.json()["queued"] == 1
        delivered = receiver.wait_for(PATH, 3)[2]

    assert {r.headers["webhook-id"] for r in [*failed, delivered]} == {event.id}
    assert delivered.event_id == event.id
    Webhook(secret).verify(delivered.body, delivered.headers)
    # The attempt log shows the replay, found by the event's id.
    attempts = eventually(lambda: (data := api.get(
        f"/v1/endpoints/{endpoint}/attempts", params={"event_id": event.id},
        headers=ACME).json()["data"]) and len(data) == 3 and data)
    assert [(a["trigger"], a["status"]) for a in attempts] == [
        ("event", "failed"), ("event", "failed"), ("replay", "succeeded")]
    assert attempts[2]["task_id"] == replayed.json()["tasks"][0]["task_id"]
