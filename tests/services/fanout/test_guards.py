"""SSRF refusal and auto-disable, with a worker whose allow-list is only 127.0.0.1/32."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator

import pytest

from services.localdev.service_process import ServiceProcess
from tests.services.fanout.harness import Platform
from tests.support.kafka import read_topic
from tests.support.receiver import Receiver
from webhooks.delivery import AttemptRecord, DeliveryTask
from webhooks.endpoints import Endpoint
from webhooks.envelope import Envelope
from webhooks.settings import Settings
from webhooks.topics import ensure_topics


@pytest.fixture(scope="module")
def settings(make_settings: Callable[..., Settings]) -> Settings:
    """127.0.0.2 is loopback too, but not allow-listed here; two failures disable."""
    module_settings = make_settings(allow_private_targets=("127.0.0.1/32",),
                                    disable_after_failures=2)
    ensure_topics(module_settings)
    return module_settings


@pytest.fixture(scope="module")
def private_receiver() -> Iterator[Receiver]:
    server = Receiver(host="127.0.0.2").start()
    yield server
    server.stop()


def attempts_for(settings: Settings, topic: str, endpoint_id: str, count: int
                 ) -> list[AttemptRecord]:
    def ours(messages: list) -> list[AttemptRecord]:  # type: ignore[type-arg]
        return [AttemptRecord.from_json(m.value()) for m in messages
                if json.loads(m.value())["endpoint_id"] == endpoint_id]

    return sorted(ours(read_topic(settings, topic, until=lambda ms: len(ours(ms)) >= count)),
                  key=lambda a: a.attempt)


def test_a_private_target_that_is_not_allow_listed_is_refused_without_a_request(
        worker: ServiceProcess, platform: Platform, receiver: Receiver,
        private_receiver: Receiver, settings: Settings) -> None:
    refused = platform.endpoint(private_receiver.url("/private"), ["*"], tenant="ssrf")
    allowed = platform.endpoint(receiver.url("/allowed"), ["*"], tenant="ssrf")
    time.sleep(2)
    event = platform.event("order.created", tenant="ssrf", id="s1")

    assert receiver.wait_for("/allowed", 1)[0].event_id == event.id
    first = attempts_for(settings, platform.topics.attempts, refused.id, 1)[0]
    assert first.status == "failed" and first.error == "refused_target"
    assert first.response_status is None and "127.0.0.2" in (first.response_body or "")
    # The refusal touched only its own endpoint: the allowed one's attempt went through.
    [delivered] = attempts_for(settings, platform.topics.attempts, allowed.id, 1)
    assert (delivered.outcome, delivered.error, delivered.event_id) == (
        "delivered", None, event.id)
    time.sleep(2)
    assert private_receiver.requests == []


def test_sustained_failure_disables_the_endpoint_and_announces_it(
        worker: ServiceProcess, platform: Platform, receiver: Receiver,
        settings: Settings) -> None:
    def failing(_: int) -> tuple[int, dict[str, str], float]:
        return 500, {}, 0.0

    endpoint = platform.endpoint(receiver.on("/broken", failing), ["order.*"], tenant="brokenco")
    platform.endpoint(receiver.url("/ops"), ["endpoint.disabled"], tenant="brokenco")
    time.sleep(2)
    event = platform.event("order.created", tenant="brokenco", id="b1")

    attempts = attempts_for(settings, platform.topics.attempts, endpoint.id, 2)
    assert [a.outcome for a in attempts] == ["retrying", "endpoint_disabled"]

    def disabled(messages: list) -> list[Endpoint]:  # type: ignore[type-arg]
        return [Endpoint.from_json(m.value()) for m in messages
                if m.key() == endpoint.id.encode() and m.value()
                and json.loads(m.value())["disabled"]]

    [record] = disabled(read_topic(settings, platform.topics.endpoints,
                                   until=lambda ms: bool(disabled(ms))))
    assert record.disabled_reason == "every delivery attempt failed for too long"

    # The operational event goes through the platform like any other: on the events
    # topic for the tenant, and on to the tenant's endpoints that subscribe to it.
    notice = Envelope.from_json(receiver.wait_for("/ops", 1)[0].body)
    assert notice.type == "endpoint.disabled" and notice.tenant == "brokenco"
    assert notice.data["object"] == {"id": endpoint.id, "url": endpoint.url,
                                     "reason": "every delivery attempt failed for too long"}

    dead = [DeliveryTask.from_json(m.value()) for m in read_topic(
        settings, platform.topics.dlq,
        until=lambda ms: any(endpoint.id.encode() in m.value() for m in ms))]
    [task] = [t for t in dead if t.endpoint_id == endpoint.id]
    assert task.event.id == event.id and len(task.history) == 2
    assert (task.dlq_reason or "").startswith("endpoint disabled")

    platform.event("order.created", tenant="brokenco", id="b2")
    time.sleep(4)
    assert len(receiver.at("/broken")) == 2
    assert 'webhooks_endpoints_disabled_total{reason="failing"}' in worker.metrics()
    # Announced once, and the listener's filter kept the order events from it.
    assert [Envelope.from_json(r.body).type for r in receiver.at("/ops")] == [
        "endpoint.disabled"]
