"""Endpoint URL verification through the public API: the eventlog (in this process) asks,
the fanout (its own process, as deployed) sends the challenge to real receivers on the
real broker, and the endpoint's state says what came of it.

The fanout's SSRF policy allows only 127.0.0.1 while the eventlog's allows 127.0.0.0/8:
a target the eventlog accepts and the fanout refuses stands for a name that resolves to
a private address at send time.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from standardwebhooks.webhooks import Webhook

from services.eventlog.app import create_app
from services.localdev.service_process import ServiceProcess
from tests.services.eventlog.conftest import ACME, GLOBEX
from tests.services.fanout.conftest import worker_log
from tests.support.eventlog import eventually, make_event, publish_events
from tests.support.receiver import Received, Receiver, ok
from webhooks.settings import Settings
from webhooks.topics import ensure_topics

VERIFICATION = "webhook.verification"


@pytest.fixture(scope="module")
def settings(make_settings: Callable[..., Settings]) -> Settings:
    module_settings = make_settings(sink_batch_wait=0.1)
    ensure_topics(module_settings)
    return module_settings


@pytest.fixture(scope="module")
def api(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture(scope="module")
def fanout(settings: Settings) -> Iterator[ServiceProcess]:
    narrower = settings.model_copy(update={"allow_private_targets": ("127.0.0.1/32",)})
    process = ServiceProcess("fanout", narrower, worker_log(settings, "verify")).start()
    yield process
    process.stop()


def echo(request: Received) -> bytes:
    """What a receiver that implements verification answers: the challenge it got (and
    anything to other events)."""
    return json.dumps({"challenge": json.loads(request.body)["data"].get("challenge")}).encode()


def create(api: TestClient, url: str, **fields: Any) -> dict[str, Any]:
    response = api.post("/v1/endpoints", headers=ACME,
                        json={"url": url, "events": ["order.*"], **fields})
    assert response.status_code == 201, response.text
    return response.json()


def settled(api: TestClient, endpoint_id: str) -> dict[str, Any]:
    """The endpoint's verification once it is no longer pending."""
    def state() -> dict[str, Any] | None:
        verification = api.get(f"/v1/endpoints/{endpoint_id}", headers=ACME).json()[
            "verification"]
        return verification if verification["state"] != "pending" else None
    return eventually(state, timeout=60)


def types_at(receiver: Receiver, path: str) -> list[str]:
    return [json.loads(r.body)["type"] for r in receiver.at(path)]


def event_ids_at(receiver: Receiver, path: str) -> list[str]:
    return [r.event_id for r in receiver.at(path) if json.loads(r.body)["type"] != VERIFICATION]


def test_an_echoing_receiver_verifies_the_endpoint_which_then_gets_events(
        api: TestClient, fanout: ServiceProcess, receiver: Receiver,
        settings: Settings) -> None:
    receiver.answers["/echo"] = echo
    created = create(api, receiver.url("/echo"), verify=True)
    assert created["verification"]["state"] == "pending"
    assert "challenge" not in created["verification"]  # only the receiver gets it

    verification = settled(api, created["id"])
    assert verification["state"] == "verified" and verification["error"] is None
    (request,) = receiver.at("/echo")
    # Signed like every webhook (Standard Webhooks), with the endpoint's own secret.
    payload = Webhook(created["secret"]).verify(request.body, request.headers)
    assert payload["type"] == VERIFICATION and len(payload["data"]["challenge"]) >= 32
    assert payload["data"]["object"] == {"id": created["id"], "url": receiver.url("/echo")}

    (event,) = publish_events(settings, [make_event("acme", "order.created")])
    eventually(lambda: event.id in event_ids_at(receiver, "/echo"))
    attempts = api.get(f"/v1/endpoints/{created['id']}/attempts", headers=ACME).json()["data"]
    assert ("verify", "succeeded", "verified") in {
        (a["trigger"], a["status"], a["outcome"]) for a in attempts}

    # What was verified is the URL: a new one is verified again before it gets events.
    receiver.answers["/moved"] = echo
    moved = api.patch(f"/v1/endpoints/{created['id']}", headers=ACME,
                      json={"url": receiver.url("/moved")})
    assert moved.json()["verification"]["state"] == "pending"
    assert settled(api, created["id"])["state"] == "verified"
    assert types_at(receiver, "/moved") == [VERIFICATION]


def test_an_unanswered_challenge_leaves_the_endpoint_unverified_until_verified_again(
        api: TestClient, fanout: ServiceProcess, receiver: Receiver,
        settings: Settings) -> None:
    receiver.on("/down", lambda n: (500, {}, 0.0))
    wrong = create(api, receiver.url("/wrong-body"), verify=True)  # 200 without the echo
    down = create(api, receiver.url("/down"), verify=True)
    control = create(api, receiver.url("/control"))  # no verification: gets events at once
    assert control["verification"] is None

    not_echoed, failing = settled(api, wrong["id"]), settled(api, down["id"])
    assert (not_echoed["state"], not_echoed["error"]) == ("failed", "challenge_not_echoed")
    assert "without echoing the challenge" in not_echoed["reason"]
    assert (failing["state"], failing["error"]) == ("failed", "http_status")
    assert failing["reason"] == "the receiver answered HTTP 500"
    for endpoint in (wrong, down):
        refused = api.post(f"/v1/endpoints/{endpoint['id']}/test", headers=ACME)
        assert refused.status_code == 409 and "not verified (failed)" in refused.text

    # Published while unverified: the endpoint without verification gets it, they do not,
    # not even once they are verified later.
    (early,) = publish_events(settings, [make_event("acme", "order.created")])
    eventually(lambda: early.id in event_ids_at(receiver, "/control"))

    receiver.answers["/wrong-body"] = receiver.answers["/down"] = echo
    receiver.on("/down", ok)
    for endpoint in (wrong, down):
        again = api.post(f"/v1/endpoints/{endpoint['id']}/verify", headers=ACME)
        assert again.status_code == 202, again.text
        assert again.json()["verification"]["state"] == "pending"
        outcome = settled(api, endpoint["id"])
        assert outcome["state"] == "verified", outcome
    challenges = [json.loads(r.body)["data"]["challenge"] for r in receiver.at("/down")]
    assert len(set(challenges)) == 2  # the second request carried a new challenge

    (late,) = publish_events(settings, [make_event("acme", "order.created")])
    for path in ("/wrong-body", "/down"):
        eventually(lambda path=path: late.id in event_ids_at(receiver, path))
        assert event_ids_at(receiver, path) == [late.id]
        assert types_at(receiver, path).count(VERIFICATION) == 2


def test_a_target_the_fanout_refuses_fails_with_that_reason(
        api: TestClient, fanout: ServiceProcess, receiver: Receiver) -> None:
    created = create(api, f"http://127.0.0.2:{receiver.port}/private", verify=True)
    verification = settled(api, created["id"])
    assert (verification["state"], verification["error"]) == ("failed", "refused_target")
    assert "127.0.0.2" in verification["reason"]
    assert receiver.at("/private") == []


def test_verify_answers_clearly_for_what_it_cannot_do(api: TestClient,
                                                      receiver: Receiver) -> None:
    plain = create(api, receiver.url("/plain"))
    theirs = api.post("/v1/endpoints", headers=GLOBEX, json={
        "url": receiver.url("/theirs"), "events": ["*"], "verify": True}).json()
    for endpoint_id in (theirs["id"], "ep_unknown"):
        missing = api.post(f"/v1/endpoints/{endpoint_id}/verify", headers=ACME)
        assert missing.status_code == 404 and f"no endpoint {endpoint_id}" in missing.text
    without = api.post(f"/v1/endpoints/{plain['id']}/verify", headers=ACME)
    assert without.status_code == 409 and "created without verification" in without.text
    bad = api.post("/v1/endpoints", headers=ACME, json={
        "url": receiver.url("/bad"), "events": ["*"], "verify": "maybe"})
    assert bad.status_code == 422 and "verify" in bad.text


def test_a_challenge_in_flight_when_the_worker_dies_is_sent_again(
        api: TestClient, fanout: ServiceProcess, receiver: Receiver) -> None:
    # The first request is answered late: the worker is killed while it waits, before
    # the outcome is in Kafka; the next worker finds the challenge pending and sends it
    # again (same webhook-id, same challenge).
    receiver.on("/restart", lambda n: (200, {}, 3.0 if n == 1 else 0.0))
    receiver.answers["/restart"] = echo
    created = create(api, receiver.url("/restart"), verify=True)
    receiver.wait_for("/restart", 1, timeout=60)
    fanout.kill()
    fanout.start()
    assert settled(api, created["id"])["state"] == "verified"
    first, second = receiver.at("/restart")[:2]
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert first.body == second.body
