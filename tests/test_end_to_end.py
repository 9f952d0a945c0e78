"""The whole platform as deployed: ingest, fanout and eventlog each in its own process,
against the real broker and the real ClickHouse engine, with a real HTTP receiver.

A client manages endpoints through the eventlog API, publishes through ingest, receives
signed webhooks (verified with the published ``standardwebhooks`` library), reads the
event log and the delivery log, and asks for a redelivery and a recovery.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from services.localdev.service_process import ServiceProcess
from tests.support.backends import with_database
from tests.support.eventlog import eventually
from tests.support.receiver import Received, Receiver
from webhooks.settings import Settings
from webhooks.topics import ensure_topics

ACME = {"Authorization": "Bearer key-acme"}
GLOBEX = {"Authorization": "Bearer key-globex"}


@pytest.fixture(scope="module")
def platform_settings(make_settings: Callable[..., Settings], clickhouse_base_url: str,
                      tmp_path_factory: pytest.TempPathFactory) -> Settings:
    settings = make_settings(retry_schedule="1s,2s", cursor_secret="e2e-cursor-secret")
    if clickhouse_base_url.startswith("chdb://"):
        # The embedded engine belongs to one process: give the eventlog its own directory.
        own = f"chdb://{tmp_path_factory.mktemp('e2e-clickhouse')}"
        settings = settings.model_copy(update={
            "clickhouse_url": with_database(own, settings.topic_prefix)})
    ensure_topics(settings)
    return settings


@pytest.fixture(scope="module")
def services(platform_settings: Settings, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[dict[str, ServiceProcess]]:
    logs: Path = tmp_path_factory.mktemp("e2e-logs")
    running: dict[str, ServiceProcess] = {}
    try:
        for name in ("eventlog", "fanout", "ingest"):
            running[name] = ServiceProcess(name, platform_settings,
                                           logs / f"{name}.log").start()
        yield running
    finally:
        for process in running.values():
            process.stop()


@pytest.fixture(scope="module")
def eventlog(services: dict[str, ServiceProcess]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=services["eventlog"].url, timeout=30.0) as client:
        yield client


@pytest.fixture(scope="module")
def ingest(services: dict[str, ServiceProcess]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=services["ingest"].url, timeout=30.0) as client:
        yield client


def create_endpoint(eventlog: httpx.Client, receiver: Receiver, path: str,
                    events: list[str], headers: dict[str, str] = ACME) -> dict[str, Any]:
    """Create an endpoint through the API and wait until the fanout delivers to it: a
    test message sent through the normal pipeline arrives once the fanout's view has it."""
    created = eventlog.post("/v1/endpoints", headers=headers,
                            json={"url": receiver.url(path), "events": events})
    assert created.status_code == 201, created.text
    endpoint = created.json()

    def test_message_arrived() -> bool:
        if any(json.loads(r.body)["type"] == "webhook.test" for r in receiver.at(path)):
            return True
        sent = eventlog.post(f"/v1/endpoints/{endpoint['id']}/test", headers=headers)
        assert sent.status_code == 202, sent.text
        return False

    eventually(test_message_arrived, timeout=60, interval=2.0)
    return endpoint


def verified(request: Received, secret: str) -> dict[str, Any]:
    """The payload, after the Standard Webhooks library accepted its signature."""
    return Webhook(secret).verify(request.body, request.headers)


def publish(ingest: httpx.Client, type: str, headers: dict[str, str] = ACME,
            **extra: Any) -> dict[str, Any]:
    response = ingest.post("/v1/events", headers=headers,
                           json={"type": type, "data": {"object": {"n": 1}}, **extra})
    assert response.status_code == 202, response.text
    return response.json()


def deliveries_of(received: list[Received], event_id: str) -> list[Received]:
    return [r for r in received if json.loads(r.body)["id"] == event_id]


def attempt_triggers(eventlog: httpx.Client, endpoint_id: str, event_id: str, count: int
                     ) -> list[tuple[str, str]] | None:
    """(trigger, status) of the attempts for ``event_id`` in the endpoint's attempt log,
    once there are ``count`` of them (None before)."""
    page = eventlog.get(f"/v1/endpoints/{endpoint_id}/attempts", headers=ACME,
                        params={"limit": 1000})
    assert page.status_code == 200, page.text
    attempts = [(a["trigger"], a["status"]) for a in page.json()["data"]
                if a["event_id"] == event_id]
    return attempts if len(attempts) == count else None


def test_an_event_goes_from_ingest_to_the_receiver_and_into_the_logs(
        eventlog: httpx.Client, ingest: httpx.Client, receiver: Receiver) -> None:
    orders = create_endpoint(eventlog, receiver, "/orders", ["order.*"])
    other_tenant = create_endpoint(eventlog, receiver, "/globex", ["*"], headers=GLOBEX)

    shipped = publish(ingest, "order.shipped")
    invoice = publish(ingest, "invoice.paid")

    (request,) = eventually(lambda: deliveries_of(receiver.at("/orders"), shipped["id"]))
    payload = verified(request, orders["secret"])
    assert payload == shipped
    assert request.headers["webhook-id"] == shipped["id"]

    # The event log has both events, newest last; the detail shows the delivery.
    def listed() -> list[str] | None:
        page = eventlog.get("/v1/events", headers=ACME).json()["data"]
        ours = [e["id"] for e in page if e["id"] in (shipped["id"], invoice["id"])]
        return ours if len(ours) == 2 else None

    assert eventually(listed) == [shipped["id"], invoice["id"]]

    def delivered() -> dict[str, Any] | None:
        detail = eventlog.get(f"/v1/events/{shipped['id']}", headers=ACME).json()
        return detail if any(d["delivered"] for d in detail["deliveries"]) else None

    detail = eventually(delivered)
    assert [(d["endpoint_id"], d["last_response_status"]) for d in detail["deliveries"]] == [
        (orders["id"], 200)]

    # Nothing else was delivered: not the unsubscribed type, nothing across tenants.
    assert not deliveries_of(receiver.at("/orders"), invoice["id"])
    globex_types = {json.loads(r.body)["type"] for r in receiver.at("/globex")}
    assert globex_types == {"webhook.test"}
    assert eventlog.get(f"/v1/events/{shipped['id']}", headers=GLOBEX).status_code == 404
    assert eventlog.get(f"/v1/endpoints/{orders['id']}", headers=GLOBEX).status_code == 404
    assert eventlog.get(f"/v1/endpoints/{other_tenant['id']}", headers=ACME).status_code == 404


def test_a_failing_receiver_is_retried_and_the_delivery_log_shows_it(
        eventlog: httpx.Client, ingest: httpx.Client, receiver: Receiver) -> None:
    flaky_calls: dict[str, int] = {}

    def fail_first_delivery_of_each_event(_: int) -> tuple[int, dict[str, str], float]:
        last = receiver.at("/flaky")[-1]
        event_id = json.loads(last.body)["id"]
        flaky_calls[event_id] = flaky_calls.get(event_id, 0) + 1
        return (503 if flaky_calls[event_id] == 1 else 200), {}, 0.0

    receiver.on("/flaky", fail_first_delivery_of_each_event)
    flaky = create_endpoint(eventlog, receiver, "/flaky", ["payment.*"])

    event = publish(ingest, "payment.failed")
    eventually(lambda: len(deliveries_of(receiver.at("/flaky"), event["id"])) == 2)
    first, second = deliveries_of(receiver.at("/flaky"), event["id"])
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == event["id"]
    assert second.at - first.at >= 0.9  # waited out the 1s tier
    assert verified(second, flaky["secret"]) == event

    def attempts() -> list[dict[str, Any]]:
        page = eventlog.get(f"/v1/endpoints/{flaky['id']}/attempts", headers=ACME).json()
        ours = [a for a in page["data"] if a["event_id"] == event["id"]]
        return ours if len(ours) == 2 else []

    failed, succeeded = eventually(attempts)
    assert (failed["status"], failed["response_status"], failed["outcome"]) == (
        "failed", 503, "retrying")
    assert (succeeded["status"], succeeded["attempt"], succeeded["outcome"]) == (
        "succeeded", 2, "delivered")
    only_failed = eventlog.get(f"/v1/endpoints/{flaky['id']}/attempts",
                               params={"status": "failed"}, headers=ACME).json()["data"]
    assert [a["id"] for a in only_failed if a["event_id"] == event["id"]] == [failed["id"]]


def test_redelivery_and_resuming_the_event_log_from_a_cursor(
        eventlog: httpx.Client, ingest: httpx.Client, receiver: Receiver) -> None:
    replay = create_endpoint(eventlog, receiver, "/replay", ["refund.*"])
    refund = publish(ingest, "refund.created", id="evt_e2erefund1")
    eventually(lambda: deliveries_of(receiver.at("/replay"), refund["id"]))

    # A retried publish with the same id is recognised, not appended twice.
    again = ingest.post("/v1/events", headers=ACME, json={
        "type": "refund.created", "data": {"object": {"n": 1}}, "id": refund["id"]})
    assert again.status_code == 200 and again.headers["idempotent-replayed"] == "true"

    # Page to the end of the log; what arrives afterwards is exactly what a resume sees.
    def page_to_end() -> tuple[list[str], str] | None:
        ids: list[str] = []
        cursor = None
        while True:
            body = eventlog.get("/v1/events", headers=ACME, params={
                "limit": 2, **({"cursor": cursor} if cursor else {})}).json()
            ids += [e["id"] for e in body["data"]]
            cursor = body["next_cursor"]
            if not body["has_more"]:
                return (ids, cursor) if refund["id"] in ids else None

    seen, cursor = eventually(page_to_end)
    assert len(seen) == len(set(seen))
    later = publish(ingest, "refund.settled")

    def resumed() -> list[str] | None:
        body = eventlog.get("/v1/events", headers=ACME, params={"cursor": cursor}).json()
        return [e["id"] for e in body["data"]] or None

    assert eventually(resumed) == [later["id"]]

    # Redelivery goes through Kafka and the fanout again, with the same webhook-id.
    queued = eventlog.post(f"/v1/events/{refund['id']}/redeliver", headers=ACME, json={})
    assert queued.status_code == 202, queued.text
    assert [t["endpoint_id"] for t in queued.json()["tasks"]] == [replay["id"]]
    eventually(lambda: len(deliveries_of(receiver.at("/replay"), refund["id"])) == 2)
    original, redelivered = deliveries_of(receiver.at("/replay"), refund["id"])
    assert redelivered.headers["webhook-id"] == original.headers["webhook-id"] == refund["id"]
    assert verified(redelivered, replay["secret"]) == refund
    assert eventually(lambda: attempt_triggers(eventlog, replay["id"], refund["id"], 2)) == [
        ("event", "succeeded"), ("redeliver", "succeeded")]


def test_recover_replays_events_since_a_time_to_the_receiver(
        eventlog: httpx.Client, ingest: httpx.Client, receiver: Receiver) -> None:
    recovering = create_endpoint(eventlog, receiver, "/recover", ["shipment.*"])
    before = publish(ingest, "shipment.created", created="2026-11-20T10:00:00Z")
    since = "2026-11-21T00:00:00Z"
    lost = [publish(ingest, "shipment.created", created="2026-11-21T08:00:00Z"),
            publish(ingest, "shipment.delivered", created="2026-11-22T09:00:00Z")]
    publish(ingest, "order.created", created="2026-11-22T09:00:00Z")  # not subscribed
    for event in (before, *lost):
        eventually(lambda event=event: deliveries_of(receiver.at("/recover"), event["id"]))
        # recover reads the event log: wait until the sink made the events visible there.
        eventually(lambda event=event: eventlog.get(
            f"/v1/events/{event['id']}", headers=ACME).status_code == 200)

    queued = eventlog.post(f"/v1/endpoints/{recovering['id']}/recover", headers=ACME,
                           json={"since": since})
    assert queued.status_code == 202, queued.text
    assert [t["event_id"] for t in queued.json()["tasks"]] == [e["id"] for e in lost]

    for event in lost:
        eventually(lambda event=event: len(deliveries_of(receiver.at("/recover"),
                                                         event["id"])) == 2)
        original, recovered = deliveries_of(receiver.at("/recover"), event["id"])
        assert recovered.headers["webhook-id"] == original.headers["webhook-id"] == event["id"]
        assert verified(recovered, recovering["secret"]) == event
        assert eventually(lambda event=event: attempt_triggers(
            eventlog, recovering["id"], event["id"], 2)) == [
            ("event", "succeeded"), ("recover", "succeeded")]
    assert len(deliveries_of(receiver.at("/recover"), before["id"])) == 1  # before `since`


def test_an_erased_tenant_leaves_no_trace_and_gets_nothing_more(
        eventlog: httpx.Client, ingest: httpx.Client, receiver: Receiver,
        services: dict[str, ServiceProcess]) -> None:
    admin = {"Authorization": "Bearer key-admin"}
    assert eventlog.post("/v1/tenants", json={"id": "erasable"}, headers=admin).status_code == 201
    key = eventlog.post("/v1/tenants/erasable/keys", json={}, headers=admin).json()["key"]
    tenant = {"Authorization": f"Bearer {key}"}
    create_endpoint(eventlog, receiver, "/erasable-ok", ["*"], headers=tenant)
    receiver.on("/erasable-failing", lambda n: (503, {}, 0.0))
    failing = eventlog.post("/v1/endpoints", headers=tenant, json={
        "url": receiver.url("/erasable-failing"), "events": ["order.*"]})
    assert failing.status_code == 201
    # The ingest replica learns of the new key within a fetch.
    eventually(lambda: ingest.post("/v1/events", headers=tenant, json={
        "type": "invoice.paid", "data": {}}).status_code == 202)
    for _ in range(2):
        publish(ingest, "invoice.paid", headers=tenant)
    receiver.wait_for("/erasable-ok", 4)  # the test message and three events
    eventually(lambda: len(eventlog.get("/v1/events", headers=tenant).json()["data"]) >= 3)

    # An event whose first attempt failed: its retry is due 1 s later, after the erasure.
    doomed = publish(ingest, "order.created", headers=tenant)
    eventually(lambda: deliveries_of(receiver.at("/erasable-failing"), doomed["id"]))
    erased = eventlog.delete("/v1/tenants/erasable", headers=admin)
    assert erased.status_code == 200, erased.text
    report = erased.json()
    assert report["rows_deleted"]["events"] >= 3
    assert report["rows_deleted"]["endpoints"] >= 2
    assert report["tombstoned"] == {"endpoints": 2, "endpoint_health": 2, "keys": 1}
    assert any("retention" in line for line in report["remaining"])

    # Nothing of it shows any more, its key is refused, its events too.
    assert eventlog.get("/v1/events", headers=tenant).status_code == 401
    for path in ("/v1/events", "/v1/endpoints", "/v1/dlq"):
        gone = eventlog.get(path, params={"tenant": "erasable"}, headers=admin)
        assert gone.status_code == 404, path
    assert eventlog.get("/v1/tenants/erasable", headers=admin).status_code == 404
    eventually(lambda: ingest.post("/v1/events", headers=admin, json={
        "type": "order.created", "tenant": "erasable", "data": {}}).status_code == 403)
    eventually(lambda: ingest.post("/v1/events", headers=tenant, json={
        "type": "order.created", "data": {}}).status_code == 401)
    again = eventlog.post("/v1/tenants", json={"id": "erasable"}, headers=admin)
    assert again.status_code == 409 and "erased" in again.json()["detail"]
    repeat = eventlog.delete("/v1/tenants/erasable", headers=admin)  # finishes a failed one
    assert repeat.status_code == 200
    assert set(repeat.json()["rows_deleted"].values()) == {0}

    # The retry tiers (1 s, 2 s) pass without another attempt of the doomed event.
    time.sleep(4.0)
    assert len(deliveries_of(receiver.at("/erasable-failing"), doomed["id"])) == 1
    outcomes = services["fanout"].metric_by_label("webhooks_deliveries_total", "outcome")
    assert outcomes.get("tenant_deleted", 0) >= 1


def test_payload_filters_and_custom_headers_shape_what_an_endpoint_gets(
        eventlog: httpx.Client, ingest: httpx.Client, receiver: Receiver) -> None:
    created = eventlog.post("/v1/endpoints", headers=ACME, json={
        "url": receiver.url("/filtered"), "events": ["order.*"],
        "headers": [{"name": "X-Team", "value": "payments"},
                    {"name": "Authorization", "value": "Bearer s3cr3t", "secret": True}],
        "filter": {"data.object.status": "shipped", "data.object.amount": {"$gte": 1000},
                   "data.object.currency": {"$in": ["EUR", "USD"]}}})
    assert created.status_code == 201, created.text
    endpoint = created.json()
    assert endpoint["headers"][1] == {"name": "Authorization", "value": "[masked]",
                                      "secret": True}
    # Published after the fanout's view has the endpoint (a test message arrives first).
    eventlog.post(f"/v1/endpoints/{endpoint['id']}/test", headers=ACME)
    eventually(lambda: receiver.at("/filtered"))

    def order(status: str, amount: int, currency: str = "EUR") -> dict[str, Any]:
        answer = ingest.post("/v1/events", headers=ACME, json={
            "type": "order.updated",
            "data": {"object": {"status": status, "amount": amount, "currency": currency}}})
        assert answer.status_code == 202
        return answer.json()

    wanted = order("shipped", 1500)
    for unwanted in (order("shipped", 999), order("pending", 5000), order("shipped", 2000, "GBP")):
        assert unwanted["id"]
    last = order("shipped", 1000, "USD")
    eventually(lambda: deliveries_of(receiver.at("/filtered"), last["id"]))
    time.sleep(1.0)  # any wrong delivery would have come by now
    got = [json.loads(r.body)["id"] for r in receiver.at("/filtered")[1:]]
    assert got == [wanted["id"], last["id"]]
    request = deliveries_of(receiver.at("/filtered"), wanted["id"])[0]
    assert request.headers["x-team"] == "payments"
    assert request.headers["authorization"] == "Bearer s3cr3t"
    assert verified(request, endpoint["secret"]) == wanted


def test_a_create_retried_after_an_eventlog_crash_answers_the_first_endpoint(
        services: dict[str, ServiceProcess], eventlog: httpx.Client) -> None:
    """The Idempotency-Key lives on the endpoint record (Kafka, ClickHouse), not in the
    process: a retry after kill -9 and restart gets the first endpoint, same secret."""
    body = {"url": "https://hooks.example.com/once", "events": ["order.*"]}
    key = {**ACME, "Idempotency-Key": "e2e-create-once"}
    first = eventlog.post("/v1/endpoints", headers=key, json=body)
    assert first.status_code == 201, first.text
    services["eventlog"].kill()
    services["eventlog"].start()
    retried = eventlog.post("/v1/endpoints", headers=key, json=body)
    assert retried.status_code == 200, retried.text
    assert retried.headers["idempotent-replayed"] == "true"
    assert retried.json() == first.json()
    listed = eventlog.get("/v1/endpoints", headers=ACME, params={"url": "hooks.example.com/once"})
    assert [e["id"] for e in listed.json()["data"]] == [first.json()["id"]]
