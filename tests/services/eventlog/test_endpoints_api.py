"""Endpoint management, attempt logs and redelivery against a real broker, sink and ClickHouse."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from services.eventlog.app import create_app
from services.fanout.endpoint_view import EndpointView
from tests.services.eventlog.conftest import ACME, ADMIN, GLOBEX
from tests.support.eventlog import eventually, make_event, publish_attempts, publish_events
from tests.support.kafka import read_topic
from webhooks.acked_producer import AckedProducer
from webhooks.delivery import AttemptRecord, DeliveryTask
from webhooks.endpoints import Endpoint
from webhooks.envelope import Envelope, parse_timestamp
from webhooks.settings import Settings
from webhooks.signing import generate_secret
from webhooks.topics import Topics

URL = "https://hooks.example.com/in"


class Tenant:
    """A fresh tenant per test, acted for with the admin key, so tests never share data."""

    def __init__(self, api: TestClient) -> None:
        self.api = api
        self.name = f"t{uuid.uuid4().hex[:10]}"

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        params = {**kwargs.pop("params", {}), "tenant": self.name}
        headers = {**kwargs.pop("headers", {}), **ADMIN}
        return self.api.request(method, path, params=params, headers=headers, **kwargs)

    def endpoint(self, events: list[str], **fields: Any) -> dict[str, Any]:
        response = self.call("POST", "/v1/endpoints", json={"url": URL, "events": events,
                                                            **fields})
        assert response.status_code == 201, response.text
        return response.json()


def endpoint_records(settings: Settings, endpoint_id: str, count: int) -> list[Any]:
    """The records for ``endpoint_id`` on the endpoints topic (value None = tombstone)."""
    def mine(messages: list[Any]) -> list[Any]:
        return [m for m in messages if m.key() == endpoint_id.encode()]
    topic = Topics.from_settings(settings).endpoints
    return mine(read_topic(settings, topic, until=lambda ms: len(mine(ms)) >= count))


def tasks_for(settings: Settings, event_ids: set[str], count: int) -> list[DeliveryTask]:
    """Delivery tasks for ``event_ids`` on the deliveries topic, once ``count`` arrived."""
    def mine(messages: list[Any]) -> list[DeliveryTask]:
        tasks = [DeliveryTask.from_json(m.value()) for m in messages]
        return [t for t in tasks if t.event.id in event_ids]
    topic = Topics.from_settings(settings).deliveries
    messages = read_topic(settings, topic, until=lambda ms: len(mine(ms)) >= count)
    for message in messages:
        task = DeliveryTask.from_json(message.value())
        assert message.key() == task.endpoint_id.encode()  # keyed by endpoint id
    return mine(messages)


def test_endpoint_crud_round_trips_through_kafka(api: TestClient, eventlog_settings: Settings
                                                 ) -> None:
    tenant = Tenant(api)
    created = tenant.endpoint(["order.*"], description="orders", rate_limit=5)
    endpoint_id = created["id"]
    assert endpoint_id.startswith("ep_") and created["secret"].startswith("whsec_")
    # Read-after-write: the caller's next read sees its write.
    got = tenant.call("GET", f"/v1/endpoints/{endpoint_id}").json()
    assert got == {k: v for k, v in created.items() if k != "secret"}
    assert [e["id"] for e in tenant.call("GET", "/v1/endpoints").json()["data"]] == [endpoint_id]

    patched = tenant.call("PATCH", f"/v1/endpoints/{endpoint_id}",
                          json={"events": ["order.shipped"], "url": URL + "/v2"})
    assert patched.status_code == 200, patched.text
    assert tenant.call("GET", f"/v1/endpoints/{endpoint_id}").json()["events"] == [
        "order.shipped"]

    assert tenant.call("DELETE", f"/v1/endpoints/{endpoint_id}").status_code == 204
    assert tenant.call("GET", f"/v1/endpoints/{endpoint_id}").status_code == 404
    assert tenant.call("GET", "/v1/endpoints").json()["data"] == []
    assert tenant.call("DELETE", f"/v1/endpoints/{endpoint_id}").status_code == 404

    # What the fanout sees: create, update, tombstone on the compacted topic, keyed by id.
    records = endpoint_records(eventlog_settings, endpoint_id, 3)
    first, second = (Endpoint.from_json(r.value()) for r in records[:2])
    assert (first.tenant, first.url, first.events, first.rate_limit) == (
        tenant.name, URL, ["order.*"], 5)
    # Sealed at rest; the secret the API answered is what it opens to.
    assert first.secrets[0].secret.startswith("whenc_v1.t1.")
    assert [s.secret for s in first.opened_secrets(eventlog_settings.secrets_key)] == [
        created["secret"]]
    assert (second.url, second.events, second.created) == (URL + "/v2", ["order.shipped"],
                                                           first.created)
    assert records[2].value() is None


@pytest.fixture(scope="module")
def fanout_view(eventlog_settings: Settings) -> Iterator[EndpointView]:
    """The endpoints view exactly as each fanout worker keeps it, from the same topic."""
    view = EndpointView(eventlog_settings.kafka, Topics.from_settings(eventlog_settings).endpoints)
    view.start()
    try:
        assert view.wait_ready(30)
        yield view
    finally:
        view.stop()


def test_api_changes_reach_the_fanouts_view_within_seconds(
        api: TestClient, fanout_view: EndpointView, eventlog_settings: Settings) -> None:
    """Create, change the filter, disable, re-enable and delete through the API: the
    fanout's view follows each change, and so does what it would deliver."""
    tenant = Tenant(api)
    shipped = Envelope.create(type="order.shipped", tenant=tenant.name, data={"object": {}},
                              api_version="2026-11-01")

    def view_shows(endpoint_id: str, **expected: Any) -> Endpoint:
        def matches() -> Endpoint | None:
            seen = fanout_view.get(endpoint_id)
            if seen is None or any(getattr(seen, k) != v for k, v in expected.items()):
                return None
            return seen
        return eventually(matches, timeout=5)

    created = tenant.endpoint(["order.*"])
    endpoint_id = created["id"]
    seen = view_shows(endpoint_id, url=URL, events=["order.*"], tenant=tenant.name)
    keyring = eventlog_settings.secrets_key
    assert [keyring.open(endpoint_id, s) for s in seen.signing_secrets()] == [created["secret"]]
    assert [e.id for e in fanout_view.matching(shipped)] == [endpoint_id]

    path = f"/v1/endpoints/{endpoint_id}"
    assert tenant.call("PATCH", path, json={"events": ["invoice.*"]}).status_code == 200
    view_shows(endpoint_id, events=["invoice.*"])
    assert fanout_view.matching(shipped) == []

    assert tenant.call("PATCH", path, json={"events": ["order.shipped"],
                                            "disabled": True}).status_code == 200
    view_shows(endpoint_id, events=["order.shipped"], disabled=True,
               disabled_reason="disabled through the API")
    assert fanout_view.matching(shipped) == []  # subscribed, but disabled

    assert tenant.call("PATCH", path, json={"disabled": False}).status_code == 200
    view_shows(endpoint_id, disabled=False)
    assert [e.id for e in fanout_view.matching(shipped)] == [endpoint_id]

    assert tenant.call("DELETE", path).status_code == 204
    eventually(lambda: fanout_view.get(endpoint_id) is None, timeout=5)
    assert fanout_view.matching(shipped) == []


def test_updates_from_other_writers_are_read(api: TestClient, eventlog_settings: Settings
                                             ) -> None:
    """The fanout disables endpoints (410 Gone) by writing the topic; the API reads that."""
    tenant = Tenant(api)
    created = tenant.endpoint(["*"])
    secrets = tenant.call("GET", f"/v1/endpoints/{created['id']}/secret").json()["secrets"]
    record = Endpoint(id=created["id"], tenant=tenant.name, url=URL, events=["*"],
                      secrets=secrets, disabled=True, disabled_reason="410 Gone",
                      created=created["created"], updated=created["updated"]
                      ).sealed(eventlog_settings.secrets_key)  # as the fanout's copy is
    AckedProducer(eventlog_settings.kafka).send(Topics.from_settings(eventlog_settings).endpoints,
                                                record.to_json(), key=created["id"].encode())
    path = f"/v1/endpoints/{created['id']}"
    eventually(lambda: tenant.call("GET", path).json()["disabled"])
    assert tenant.call("GET", path).json()["disabled_reason"] == "410 Gone"
    enabled = tenant.call("PATCH", path, json={"disabled": False}).json()
    assert enabled["disabled"] is False and enabled["disabled_reason"] is None


def test_a_change_does_not_undo_a_write_the_table_has_not_caught_up_with(
        api: TestClient, eventlog_settings: Settings) -> None:
    """The fanout disables an endpoint and, before the sink stored that, the tenant changes
    the description (or rotates the secret): the change starts from the disabled record."""
    tenant = Tenant(api)
    producer = AckedProducer(eventlog_settings.kafka)
    topic = Topics.from_settings(eventlog_settings).endpoints
    for change in ({"description": "renamed"}, None):
        created = tenant.endpoint(["*"])
        path = f"/v1/endpoints/{created['id']}"
        current = Endpoint.from_dict({
            **{k: v for k, v in created.items() if k in Endpoint.model_fields},
            "tenant": tenant.name,
            "secrets": tenant.call("GET", f"{path}/secret").json()["secrets"]})
        disabled = current.model_copy(update={"disabled": True, "disabled_reason": "410 Gone"}
                                      ).sealed(eventlog_settings.secrets_key)
        producer.send(topic, disabled.to_json(), key=created["id"].encode())
        if change is not None:
            answer = tenant.call("PATCH", path, json=change)
        else:
            answer = tenant.call("POST", f"{path}/rotate-secret")
        assert answer.status_code == 200, answer.text
        after = tenant.call("GET", path).json()
        assert after["disabled"] is True and after["disabled_reason"] == "410 Gone", after
        if change is not None:
            assert after["description"] == "renamed"
        else:
            assert len(tenant.call("GET", f"{path}/secret").json()["secrets"]) == 2
    producer.close()


@pytest.mark.parametrize("body, status", [
    ({"url": "ftp://hooks.example.com/x", "events": ["*"]}, 422),
    ({"url": "https://user:pw@hooks.example.com/x", "events": ["*"]}, 422),
    ({"url": "http://10.1.2.3/x", "events": ["*"]}, 422),
    ({"url": "http://169.254.169.254/latest", "events": ["*"]}, 422),
    ({"url": "https:///nohost", "events": ["*"]}, 422),
    ({"url": URL, "events": []}, 422),
    ({"url": URL, "events": ["Order Shipped"]}, 422),
    ({"url": URL, "events": ["*"], "secret": "not-a-secret"}, 422),
    ({"url": URL, "events": ["*"], "secret": "whsec_c2hvcnQ="}, 422),
    ({"url": URL, "events": ["*"], "rate_limit": 0}, 422),
    ({"url": URL, "events": ["*"], "colour": "blue"}, 422),
    ({"events": ["*"]}, 422),
])
def test_bad_endpoints_are_refused_and_change_nothing(api: TestClient, body: dict,
                                                      status: int) -> None:
    tenant = Tenant(api)
    response = tenant.call("POST", "/v1/endpoints", json=body)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert tenant.call("GET", "/v1/endpoints").json()["data"] == []


def test_malformed_json_and_bad_patches(api: TestClient) -> None:
    tenant = Tenant(api)
    response = tenant.call("POST", "/v1/endpoints", content=b"{nope",
                           headers={"content-type": "application/json"})
    assert response.status_code == 400
    created = tenant.endpoint(["*"])
    path = f"/v1/endpoints/{created['id']}"
    assert tenant.call("PATCH", path, json={"url": "ftp://x/y"}).status_code == 422
    assert tenant.call("PATCH", path, json={"url": None}).status_code == 422
    assert tenant.call("PATCH", path, json={"secrets": []}).status_code == 422
    assert tenant.call("GET", path).json()["url"] == URL
    # Loopback is allowed here only because the test settings allow-list 127.0.0.0/8.
    assert tenant.call("PATCH", path, json={"url": "http://127.0.0.1:9/x"}).status_code == 200


def test_rotate_secret_keeps_the_old_one_for_the_overlap(api: TestClient,
                                                         eventlog_settings: Settings) -> None:
    tenant = Tenant(api)
    first_secret = generate_secret()
    created = tenant.endpoint(["*"], secret=first_secret)
    assert created["secret"] == first_secret
    path = f"/v1/endpoints/{created['id']}"
    overlap = timedelta(seconds=eventlog_settings.secret_rotation_overlap)

    started = datetime.now(UTC)
    rotated = tenant.call("POST", f"{path}/rotate-secret")
    assert rotated.status_code == 200, rotated.text
    second_secret = rotated.json()["secret"]
    assert second_secret.startswith("whsec_") and second_secret != first_secret
    secrets = tenant.call("GET", f"{path}/secret").json()["secrets"]
    assert [s["secret"] for s in secrets] == [second_secret, first_secret]  # new first
    assert secrets[0]["expires"] is None
    first_expiry = parse_timestamp(secrets[1]["expires"])
    assert started + overlap <= first_expiry <= datetime.now(UTC) + overlap

    third_secret = tenant.call("POST", f"{path}/rotate-secret").json()["secret"]
    secrets = tenant.call("GET", f"{path}/secret").json()["secrets"]
    assert [s["secret"] for s in secrets] == [third_secret, second_secret, first_secret]
    assert parse_timestamp(secrets[2]["expires"]) == first_expiry  # never extended
    record = Endpoint.from_json(endpoint_records(eventlog_settings, created["id"], 3)[2].value())
    keyring = eventlog_settings.secrets_key

    def opened(stored: list[str]) -> list[str]:
        return [keyring.open(record.id, secret) for secret in stored]
    assert opened(record.signing_secrets()) == [third_secret, second_secret, first_secret]
    assert opened(record.signing_secrets(first_expiry + timedelta(seconds=1))) == [third_secret]


def test_the_rotation_overlap_follows_the_setting(api: TestClient,
                                                  eventlog_settings: Settings) -> None:
    """With WEBHOOKS_SECRET_ROTATION_OVERLAP=60s the old secret expires a minute after the
    rotation; unset, it is 24 hours."""
    assert Settings.model_fields["secret_rotation_overlap"].default == 24 * 3600
    # The `api` fixture's sink (same process, same database) serves this app's reads.
    short = eventlog_settings.model_copy(update={"secret_rotation_overlap": 60.0,
                                                 "eventlog_role": "api"})
    with TestClient(create_app(short)) as short_api:
        tenant = Tenant(short_api)
        created = tenant.endpoint(["*"])
        path = f"/v1/endpoints/{created['id']}"
        started = datetime.now(UTC)
        rotated = tenant.call("POST", f"{path}/rotate-secret")
        finished = datetime.now(UTC)
        assert rotated.status_code == 200, rotated.text
        secrets = tenant.call("GET", f"{path}/secret").json()["secrets"]
    assert [s["secret"] for s in secrets] == [rotated.json()["secret"], created["secret"]]
    expiry = parse_timestamp(secrets[1]["expires"])
    assert started + timedelta(seconds=60) <= expiry <= finished + timedelta(seconds=60)


def test_endpoints_are_invisible_to_other_tenants(api: TestClient) -> None:
    created = api.post("/v1/endpoints", json={"url": URL, "events": ["*"]}, headers=ACME).json()
    path = f"/v1/endpoints/{created['id']}"
    assert api.get(path, headers=ACME).status_code == 200
    for method, suffix, body in [("GET", "", None), ("PATCH", "", {"description": "x"}),
                                 ("DELETE", "", None), ("POST", "/rotate-secret", None),
                                 ("POST", "/test", None), ("GET", "/attempts", None),
                                 ("GET", "/secret", None),
                                 ("POST", "/recover", {"since": "2026-01-01T00:00:00Z"})]:
        response = api.request(method, path + suffix, json=body, headers=GLOBEX)
        assert response.status_code == 404, (method, suffix, response.text)
    assert created["id"] not in [e["id"] for e in
                                 api.get("/v1/endpoints", headers=GLOBEX).json()["data"]]
    assert api.get(path, headers=ACME).json()["description"] == ""


def test_redeliver_queues_the_same_event_for_exactly_the_matching_endpoints(
        api: TestClient, eventlog_settings: Settings) -> None:
    tenant = Tenant(api)
    every_order = tenant.endpoint(["order.*"])["id"]
    shipped = tenant.endpoint(["order.shipped"])["id"]
    customers = tenant.endpoint(["customer.*"])["id"]
    off = tenant.endpoint(["*"])["id"]
    tenant.call("PATCH", f"/v1/endpoints/{off}", json={"disabled": True})
    event = publish_events(eventlog_settings, [make_event(tenant.name, "order.shipped")])[0]
    eventually(lambda: tenant.call("GET", f"/v1/events/{event.id}").status_code == 200)

    response = tenant.call("POST", f"/v1/events/{event.id}/redeliver")
    assert response.status_code == 202, response.text
    assert response.json()["queued"] == 2
    one = tenant.call("POST", f"/v1/events/{event.id}/redeliver", json={"endpoint_id": shipped})
    assert one.status_code == 202 and one.json()["tasks"][0]["endpoint_id"] == shipped
    assert tenant.call("POST", f"/v1/events/{event.id}/redeliver",
                       json={"endpoint_id": customers}).status_code == 409
    assert tenant.call("POST", f"/v1/events/{event.id}/redeliver",
                       json={"endpoint_id": "ep_nope"}).status_code == 404
    assert tenant.call("POST", "/v1/events/evt_nope/redeliver").status_code == 404

    tasks = tasks_for(eventlog_settings, {event.id}, 3)
    assert sorted(t.endpoint_id for t in tasks) == sorted([every_order, shipped, shipped])
    assert {t.trigger for t in tasks} == {"redeliver"} and {t.attempt for t in tasks} == {1}
    assert all(t.event == event for t in tasks)  # same id, same body: same webhook-id
    queued_ids = {t["task_id"] for t in response.json()["tasks"] + one.json()["tasks"]}
    assert queued_ids == {t.task_id for t in tasks}


def test_recover_queues_every_matching_event_since(api: TestClient,
                                                   eventlog_settings: Settings) -> None:
    tenant = Tenant(api)
    endpoint = tenant.endpoint(["invoice.*"])["id"]
    since = datetime(2026, 11, 10, tzinfo=UTC)
    events = [make_event(tenant.name, "invoice.paid", since - timedelta(seconds=1)),
              make_event(tenant.name, "invoice.paid", since + timedelta(days=2)),
              make_event(tenant.name, "invoice.created", since),  # at `since`: included
              make_event(tenant.name, "order.created", since + timedelta(days=1)),
              make_event(tenant.name, "invoice.voided", since + timedelta(hours=1)),
              make_event("acme", "invoice.paid", since + timedelta(days=1))]
    publish_events(eventlog_settings, events)
    eventually(lambda: all(tenant.call("GET", f"/v1/events/{e.id}").status_code == 200
                           for e in events[:5]))
    response = tenant.call("POST", f"/v1/endpoints/{endpoint}/recover",
                           json={"since": since.isoformat()})
    assert response.status_code == 202, response.text
    expected = [events[1].id, events[2].id, events[4].id]
    assert response.json()["queued"] == 3
    assert [t["event_id"] for t in response.json()["tasks"]] == expected
    tasks = tasks_for(eventlog_settings, {e.id for e in events}, 3)
    assert [t.event.id for t in tasks] == expected
    assert {(t.endpoint_id, t.trigger) for t in tasks} == {(endpoint, "recover")}
    window = tenant.call("POST", f"/v1/endpoints/{endpoint}/recover",
                         json={"since": since.isoformat(),
                               "until": (since + timedelta(days=1)).isoformat()})
    assert [t["event_id"] for t in window.json()["tasks"]] == [events[2].id, events[4].id]
    assert tenant.call("POST", f"/v1/endpoints/{endpoint}/recover",
                       json={"since": "2026-11-10T00:00:00"}).status_code == 422  # no zone
    assert tenant.call("POST", f"/v1/endpoints/{endpoint}/recover",
                       json={}).status_code == 422


def test_test_send_goes_through_the_deliveries_topic(api: TestClient,
                                                     eventlog_settings: Settings) -> None:
    tenant = Tenant(api)
    endpoint = tenant.endpoint(["order.*"])["id"]
    response = tenant.call("POST", f"/v1/endpoints/{endpoint}/test")
    assert response.status_code == 202, response.text
    event_id = response.json()["tasks"][0]["event_id"]
    [task] = tasks_for(eventlog_settings, {event_id}, 1)
    assert (task.endpoint_id, task.trigger, task.event.type, task.event.tenant) == (
        endpoint, "test", "webhook.test", tenant.name)


def test_attempt_log_pages_by_status(api: TestClient, eventlog_settings: Settings) -> None:
    tenant = Tenant(api)
    endpoint = tenant.endpoint(["*"])["id"]
    statuses = ["failed", "failed", "succeeded", "failed", "succeeded", "failed", "failed"]
    records = [AttemptRecord(task_id="dlv_x", event_id=f"evt_{i}", event_type="order.created",
                             endpoint_id=endpoint, tenant=tenant.name, attempt=1,
                             trigger="event", url=URL, status=status,
                             response_status=200 if status == "succeeded" else 500,
                             latency_ms=1.0,
                             outcome="delivered" if status == "succeeded" else "retrying")
               for i, status in enumerate(statuses)]
    publish_attempts(eventlog_settings, records)

    def page(**params: Any) -> tuple[list[str], str | None]:
        ids: list[str] = []
        cursor = None
        while True:
            query = {**params, **({"cursor": cursor} if cursor else {})}
            response = tenant.call("GET", f"/v1/endpoints/{endpoint}/attempts", params=query)
            assert response.status_code == 200, response.text
            body = response.json()
            ids += [a["id"] for a in body["data"]]
            cursor = body["next_cursor"]
            if not body["has_more"]:
                return ids, cursor

    eventually(lambda: len(page()[0]) == len(records))
    failed, cursor = page(status="failed", limit=2)
    assert failed == [r.id for r in records if r.status == "failed"]
    assert page()[0] == [r.id for r in records]
    mismatched = tenant.call("GET", f"/v1/endpoints/{endpoint}/attempts",
                             params={"status": "succeeded", "cursor": cursor})
    assert mismatched.status_code == 400
    assert tenant.call("GET", f"/v1/endpoints/{endpoint}/attempts",
                       params={"status": "lost"}).status_code == 400


def test_attempt_log_filters_by_event_error_and_time_and_the_cursor_carries_them(
        api: TestClient, eventlog_settings: Settings) -> None:
    tenant = Tenant(api)
    endpoint = tenant.endpoint(["*"])["id"]
    base = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
    # (event, error, minutes after base)
    shape = [("evt_a", "timeout", 0), ("evt_a", "http_status", 10), ("evt_a", None, 20),
             ("evt_b", "connect", 5), ("evt_b", "http_status", 15), ("evt_c", None, 25)]
    records = [AttemptRecord(task_id="dlv_x", event_id=event_id, event_type="order.created",
                             endpoint_id=endpoint, tenant=tenant.name, attempt=1,
                             trigger="event", url=URL,
                             status="failed" if error else "succeeded",
                             response_status=None if error == "connect" else 200,
                             error=error, latency_ms=1.0,
                             timestamp=base + timedelta(minutes=minutes),
                             outcome="retrying" if error else "delivered")
               for event_id, error, minutes in shape]
    publish_attempts(eventlog_settings, records)
    path = f"/v1/endpoints/{endpoint}/attempts"

    def ids(**params: Any) -> list[str]:
        """Every attempt, one per page, sending the cursor alone after the first page."""
        seen: list[str] = []
        query = {**params, "limit": 1}
        while True:
            response = tenant.call("GET", path, params=query)
            assert response.status_code == 200, response.text
            body = response.json()
            seen += [a["id"] for a in body["data"]]
            if not body["has_more"]:
                return seen
            query = {"cursor": body["next_cursor"], "limit": 1}

    eventually(lambda: len(ids()) == len(records))
    by = {(r.event_id, r.error): r.id for r in records}
    assert ids(event_id="evt_a") == [by["evt_a", "timeout"], by["evt_a", "http_status"],
                                     by["evt_a", None]]
    assert ids(error="http_status") == [by["evt_a", "http_status"], by["evt_b", "http_status"]]
    assert ids(event_id="evt_b", error="http_status") == [by["evt_b", "http_status"]]
    assert ids(status="succeeded") == [by["evt_a", None], by["evt_c", None]]
    assert ids(created_after=(base + timedelta(minutes=10)).isoformat(),
               created_before=(base + timedelta(minutes=25)).isoformat()) == [
        by["evt_a", None], by["evt_b", "http_status"]]
    assert ids(created_after=(base + timedelta(minutes=24)).isoformat()) == [by["evt_c", None]]
    first = tenant.call("GET", path, params={"event_id": "evt_a", "limit": 1}).json()
    for params, status in (({"error": "timeout"}, 400), ({"event_id": "evt_b"}, 400),
                           ({"event_id": "evt_a"}, 200), ({}, 200)):
        response = tenant.call("GET", path, params={"cursor": first["next_cursor"], **params})
        assert response.status_code == status, (params, response.text)
    other = tenant.endpoint(["*"])["id"]  # a cursor of one endpoint's log is not another's
    assert tenant.call("GET", f"/v1/endpoints/{other}/attempts",
                       params={"cursor": first["next_cursor"]}).status_code == 400
    for bad in ({"error": "Not A Class"}, {"event_id": "e" * 81},
                {"created_after": base.isoformat(), "created_before": base.isoformat()}):
        response = tenant.call("GET", path, params=bad)
        assert response.status_code == 400, (bad, response.text)
        assert response.json()["code"] == "invalid_parameter"


@pytest.mark.parametrize(("field", "value", "named"), [
    ("headers", [{"name": "Host", "value": "evil"}], "'Host': reserved"),
    ("headers", [{"name": "webhook-id", "value": "x"}], "'webhook-id': reserved"),
    ("headers", [{"name": "Content-Length", "value": "1"}], "reserved"),
    ("headers", [{"name": "Transfer-Encoding", "value": "chunked"}], "reserved"),
    ("headers", [{"name": "bad name", "value": "x"}], "'bad name': not a valid"),
    ("headers", [{"name": "X-A", "value": "a\r\nX-Injected: 1"}], "'X-A': the value"),
    ("headers", [{"name": "X-A", "value": "1"}, {"name": "x-a", "value": "2"}], "twice"),
    ("headers", [{"name": f"X-{i}", "value": "v"} for i in range(21)], "20"),
    ("filter", {"data.amount": {"$gt": []}}, "data.amount.$gt"),
    ("filter", {"data.note": {"$regex": "(open"}}, "data.note.$regex"),
    ("filter", {"$where": "1"}, "$where"),
])
def test_bad_headers_and_filters_are_refused_naming_them(
        api: TestClient, field: str, value: object, named: str) -> None:
    before = api.get("/v1/endpoints", headers=ACME).json()["data"]
    created = api.post("/v1/endpoints", headers=ACME, json={
        "url": "https://example.com/hook", "events": ["*"], field: value})
    assert created.status_code == 422
    assert named in json.dumps(created.json())
    assert api.get("/v1/endpoints", headers=ACME).json()["data"] == before


def test_headers_and_filters_are_kept_shown_masked_and_changed(api: TestClient) -> None:
    created = api.post("/v1/endpoints", headers=ACME, json={
        "url": "https://example.com/options", "events": ["order.*"],
        "headers": [{"name": "X-Api-Key", "value": "k-123", "secret": True},
                    {"name": "X-Team", "value": "ops"}],
        "filter": {"data.object.amount": {"$gte": 10}}}).json()
    shown = api.get(f"/v1/endpoints/{created['id']}", headers=ACME).json()
    assert shown["headers"] == [{"name": "X-Api-Key", "value": "[masked]", "secret": True},
                                {"name": "X-Team", "value": "ops", "secret": False}]
    assert "k-123" not in json.dumps(shown)
    assert shown["filter"] == {"data.object.amount": {"$gte": 10}}

    cleared = api.patch(f"/v1/endpoints/{created['id']}", headers=ACME,
                        json={"filter": None, "headers": []}).json()
    assert cleared["filter"] is None and cleared["headers"] == []
    refused = api.patch(f"/v1/endpoints/{created['id']}", headers=ACME, json={"headers": None})
    assert refused.status_code == 422


def test_ordered_and_paused_are_set_shown_and_a_long_pause_warns(
        api: TestClient, eventlog_settings: Settings) -> None:
    created = api.post("/v1/endpoints", headers=ACME, json={
        "url": "https://example.com/ordered", "events": ["*"], "ordered": True}).json()
    assert created["ordered"] is True and created["paused"] is False
    assert created["paused_since"] is None and created["warnings"] == []

    paused = api.patch(f"/v1/endpoints/{created['id']}", headers=ACME,
                       json={"paused": True}).json()
    assert paused["paused"] is True and paused["paused_since"] is not None
    assert paused["warnings"] == []  # far from the retention
    again = api.patch(f"/v1/endpoints/{created['id']}", headers=ACME,
                      json={"paused": True}).json()
    assert again["paused_since"] == paused["paused_since"]  # still paused since then
    assert api.patch(f"/v1/endpoints/{created['id']}", headers=ACME,
                     json={"ordered": None}).status_code == 422

    # Paused since longer ago than retention minus two days: the answer warns.
    records = read_topic(eventlog_settings, Topics.from_settings(eventlog_settings).endpoints,
                         idle=1.0)
    record = Endpoint.from_json([m for m in records if m.key() == created["id"].encode()][-1]
                                .value())
    long_ago = record.paused_since - timedelta(days=eventlog_settings.retention_days - 1)
    AckedProducer(eventlog_settings.kafka).send(
        Topics.from_settings(eventlog_settings).endpoints,
        record.model_copy(update={"paused_since": long_ago}).to_json(),
        key=record.id.encode())
    warnings = eventually(lambda: api.get(f"/v1/endpoints/{created['id']}",
                                          headers=ACME).json()["warnings"])
    assert "resume it before" in warnings[0]

    resumed = api.patch(f"/v1/endpoints/{created['id']}", headers=ACME,
                        json={"paused": False}).json()
    assert resumed["paused"] is False and resumed["paused_since"] is None
    assert resumed["warnings"] == []


def test_the_endpoint_listing_pages_with_a_cursor_that_carries_its_filters(
        api: TestClient) -> None:
    tenant = Tenant(api)
    made = [tenant.endpoint(["*"], url=f"https://hooks.example.com/{name}/{i}")
            for i, name in enumerate(["Orders", "billing", "orders", "ship", "orders"])]
    tenant.call("PATCH", f"/v1/endpoints/{made[2]['id']}", json={"disabled": True})
    tenant.call("DELETE", f"/v1/endpoints/{made[3]['id']}")
    live = [e["id"] for e in made if e is not made[3]]

    def pages(**params: Any) -> list[list[str]]:
        found, query = [], params
        while True:
            response = tenant.call("GET", "/v1/endpoints", params=query)
            assert response.status_code == 200, response.text
            page = response.json()
            assert set(page) == {"data", "has_more", "next_cursor"}
            found.append([e["id"] for e in page["data"]])
            if not page["has_more"]:
                return found
            query = {"cursor": page["next_cursor"], "limit": params.get("limit", 100)}

    assert pages() == [live]  # by id: oldest first
    assert pages(limit=2) == [live[:2], live[2:]]
    assert pages(limit=1) == [[i] for i in live]
    assert pages(url="ORDERS", limit=1) == [[made[0]["id"]], [made[2]["id"]], [made[4]["id"]]]
    assert pages(disabled="true") == [[made[2]["id"]]]
    assert pages(disabled="false", url="orders") == [[made[0]["id"], made[4]["id"]]]
    assert pages(url="nowhere") == [[]]
    # A page holds no secrets; secret header values stay masked.
    assert all("secret" not in e for e in tenant.call("GET", "/v1/endpoints").json()["data"])

    first = tenant.call("GET", "/v1/endpoints", params={"limit": 2, "url": "orders"}).json()
    # The cursor continues alone or with the same filters, never with others...
    again = tenant.call("GET", "/v1/endpoints", params={"cursor": first["next_cursor"],
                                                        "url": "orders"})
    assert [e["id"] for e in again.json()["data"]] == [made[4]["id"]]
    for bad in ({"url": "billing"}, {"disabled": "true"}):
        refused = tenant.call("GET", "/v1/endpoints",
                              params={"cursor": first["next_cursor"], **bad})
        assert refused.status_code == 400 and "cursor" in refused.json()["detail"]
    # ...nor for another tenant, another listing, or altered.
    other = Tenant(api)
    assert other.call("GET", "/v1/endpoints",
                      params={"cursor": first["next_cursor"]}).status_code == 400
    assert tenant.call("GET", f"/v1/endpoints/{made[0]['id']}/attempts",
                       params={"cursor": first["next_cursor"]}).status_code == 400
    body, mac = first["next_cursor"].split(".")
    assert tenant.call("GET", "/v1/endpoints",
                       params={"cursor": f"{body}x.{mac}"}).status_code == 400
    # A cursor at the end picks up endpoints created later.
    last = tenant.call("GET", "/v1/endpoints").json()
    newer = tenant.endpoint(["*"])
    after = tenant.call("GET", "/v1/endpoints", params={"cursor": last["next_cursor"]}).json()
    assert [e["id"] for e in after["data"]] == [newer["id"]]
    for bad in ({"limit": 0}, {"limit": 1001}, {"disabled": "maybe"}):
        response = tenant.call("GET", "/v1/endpoints", params=bad)
        assert response.status_code == 400, (bad, response.text)
        assert response.json()["code"] == "invalid_parameter"


def test_a_create_retried_with_its_idempotency_key_answers_the_first_endpoint(
        api: TestClient, eventlog_settings: Settings) -> None:
    tenant = Tenant(api)
    body = {"url": URL, "events": ["order.*"], "description": "orders",
            "headers": [{"name": "X-Api-Key", "value": "k-1", "secret": True}]}
    key = {"Idempotency-Key": f"create-orders-{uuid.uuid4()}"}
    first = tenant.call("POST", "/v1/endpoints", json=body, headers=key)
    assert first.status_code == 201, first.text
    assert "idempotent-replayed" not in first.headers
    # Defaults spelled out are the same request.
    retried = tenant.call("POST", "/v1/endpoints", json={**body, "rate_limit": None},
                          headers=key)
    assert retried.status_code == 200, retried.text
    assert retried.headers["idempotent-replayed"] == "true"
    assert retried.json() == first.json()  # same id, same secret
    listed = tenant.call("GET", "/v1/endpoints").json()["data"]
    assert [e["id"] for e in listed] == [first.json()["id"]]

    # Another body with the key: 422 naming what differs; nothing is created.
    other = tenant.call("POST", "/v1/endpoints", headers=key,
                        json={**body, "url": URL + "/other", "events": ["*"]})
    assert other.status_code == 422, other.text
    assert other.json()["detail"].startswith(
        f"Idempotency-Key: already used to create {first.json()['id']} with other values "
        "of events, url;")
    secret_changed = tenant.call("POST", "/v1/endpoints", headers=key, json={
        **body, "headers": [{"name": "X-Api-Key", "value": "k-2", "secret": True}]})
    assert "values of headers;" in secret_changed.json()["detail"]
    assert len(tenant.call("GET", "/v1/endpoints").json()["data"]) == 1

    # A change since does not make the retry a different request; the key stays on the
    # record, which is what the fanout reads too.
    patched = tenant.call("PATCH", f"/v1/endpoints/{first.json()['id']}",
                          json={"description": "changed"})
    assert patched.status_code == 200
    again = tenant.call("POST", "/v1/endpoints", json=body, headers=key)
    assert again.status_code == 200 and again.json()["description"] == "changed"
    [*_, latest] = endpoint_records(eventlog_settings, first.json()["id"], 2)
    record = Endpoint.from_json(latest.value())
    assert record.idempotency is not None and record.idempotency.key == key["Idempotency-Key"]

    # Keys belong to a tenant; another key, or no key, is another endpoint.
    elsewhere = Tenant(api).call("POST", "/v1/endpoints", json=body, headers=key)
    assert elsewhere.status_code == 201 and elsewhere.json()["id"] != first.json()["id"]
    fresh = tenant.call("POST", "/v1/endpoints", json=body,
                        headers={"Idempotency-Key": "another"})
    unkeyed = tenant.call("POST", "/v1/endpoints", json=body)
    assert (fresh.status_code, unkeyed.status_code) == (201, 201)
    assert len({first.json()["id"], fresh.json()["id"], unkeyed.json()["id"]}) == 3

    # Deleting the endpoint forgets its key.
    tenant.call("DELETE", f"/v1/endpoints/{first.json()['id']}")
    recreated = tenant.call("POST", "/v1/endpoints", json=body, headers=key)
    assert recreated.status_code == 201 and recreated.json()["id"] != first.json()["id"]

    for bad in (b"", b"x" * 256, "caf\u00e9".encode(), b"tab\tbed"):
        refused = tenant.call("POST", "/v1/endpoints", json=body,
                              headers={"Idempotency-Key": bad})
        assert refused.status_code == 400, (bad, refused.text)
        assert "Idempotency-Key" in refused.json()["detail"]


def test_an_idempotent_create_is_recognised_by_a_fresh_eventlog_and_after_its_window(
        api: TestClient, eventlog_settings: Settings) -> None:
    """The key lives on the endpoint record (Kafka and ClickHouse), not in a process:
    another eventlog app (as after a restart) answers the retry; past the idempotency
    window the key makes a new endpoint."""
    tenant = Tenant(api)
    body = {"url": URL, "events": ["*"]}
    key = {"Idempotency-Key": "restart-proof"}
    first = tenant.call("POST", "/v1/endpoints", json=body, headers=key).json()
    # The `api` fixture's sink (same process, same database) serves this app's reads.
    fresh_settings = eventlog_settings.model_copy(update={"eventlog_role": "api"})
    with TestClient(create_app(fresh_settings)) as fresh:
        retried = Tenant(fresh)
        retried.name = tenant.name
        answer = retried.call("POST", "/v1/endpoints", json=body, headers=key)
        assert answer.status_code == 200 and answer.json() == first
    short = eventlog_settings.model_copy(update={"eventlog_role": "api",
                                                 "idempotency_window": 0.5})
    with TestClient(create_app(short)) as short_api:
        later = Tenant(short_api)
        later.name = tenant.name
        time.sleep(0.6)
        expired = later.call("POST", "/v1/endpoints", json=body, headers=key)
        assert expired.status_code == 201 and expired.json()["id"] != first["id"]
