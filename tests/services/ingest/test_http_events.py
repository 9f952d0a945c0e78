"""POST /v1/events and /v1/events/batch against the real broker."""

from __future__ import annotations

import json
import uuid

from fastapi.testclient import TestClient

from tests.services.ingest.conftest import ACME, ADMIN, GLOBEX, envelopes_on
from webhooks.envelope import Envelope
from webhooks.settings import Settings
from webhooks.topics import Topics


def marker() -> str:
    return uuid.uuid4().hex


def post(client: TestClient, body: object, headers: dict[str, str] = ACME):
    return client.post("/v1/events", json=body, headers=headers)


def sentinel(client: TestClient, mark: str, headers: dict[str, str] = ACME) -> str:
    """A good event after the bad ones: once it is on the topic, so would they be."""
    response = post(client, {"type": "test.sentinel", "data": {"marker": mark}}, headers)
    assert response.status_code == 202
    return response.json()["id"]


def test_accepted_event_is_on_the_events_topic_once_keyed_by_tenant(
        ingest: TestClient, settings: Settings) -> None:
    mark = marker()
    response = post(ingest, {"type": "order.shipped", "data": {"marker": mark, "n": 1}})
    assert response.status_code == 202
    envelope = Envelope.model_validate(response.json())
    assert envelope.tenant == "acme" and envelope.api_version == settings.api_version

    found = envelopes_on(settings, Topics.from_settings(settings).events, until_id=envelope.id,
                         marker=mark)
    assert len(found) == 1
    assert found[0].pop("_key") == b"acme"
    assert Envelope.from_dict(found[0]) == envelope


def test_bad_requests_get_precise_problems_and_append_nothing(
        ingest: TestClient, settings: Settings) -> None:
    mark = marker()
    cases = [
        (ingest.post("/v1/events", content=b'{"type": "a.b", "data": {"marker": "' + mark.encode()
                     + b'"}', headers={**ACME, "content-type": "application/json"}),
         400, "body: malformed JSON"),
        (post(ingest, {"type": "a.b", "data": ["marker", mark]}), 422, "data: "),
        (post(ingest, {"type": 12, "data": {"marker": mark}}), 422, "type: 12 is not of type"),
        (post(ingest, {"type": "a.b", "data": {"marker": mark}, "extra": 1}), 422,
         "extra: unknown field"),
        (post(ingest, {"type": "a.b", "data": {"marker": mark}}, ADMIN), 422, "tenant: required"),
        (post(ingest, {"type": "a.b", "data": {"marker": mark}, "tenant": "globex"}), 403,
         "tenant: only admin"),
        (post(ingest, {"type": "a.b", "data": {"marker": mark}}, {}), 401, "API key"),
        (post(ingest, {"type": "a.b", "data": {"marker": mark}},
              {"Authorization": "Bearer nope"}), 401, "API key"),
        (post(ingest, {"type": "a.b", "data": {"marker": mark, "pad": "x" * 300_000}}), 413,
         "body: larger than the limit of 262144 bytes"),
        (ingest.post("/v1/events", json={"type": "a.b", "data": {"marker": mark}},
                     headers={**ACME, "Idempotency-Key": "x" * 300}), 422, "Idempotency-Key:"),
    ]
    for response, status, detail in cases:
        assert response.status_code == status, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["status"] == status
        assert detail in response.json()["detail"], response.json()

    good = sentinel(ingest, mark)
    found = envelopes_on(settings, Topics.from_settings(settings).events, until_id=good,
                         marker=mark)
    assert [e["id"] for e in found] == [good]


def test_oversized_body_without_content_length_is_refused_while_reading(
        ingest: TestClient) -> None:
    def chunks():
        yield b'{"type": "a.b", "data": {"pad": "'
        for _ in range(300):
            yield b"x" * 1024
        yield b'"}}'

    response = ingest.post("/v1/events", content=chunks(), headers=ACME)
    assert response.status_code == 413
    assert "larger than the limit" in response.json()["detail"]


def test_admin_publishes_for_a_named_tenant(ingest: TestClient, settings: Settings) -> None:
    mark = marker()
    response = post(ingest, {"type": "order.created", "data": {"marker": mark},
                             "tenant": "globex"}, ADMIN)
    assert response.status_code == 202 and response.json()["tenant"] == "globex"
    found = envelopes_on(settings, Topics.from_settings(settings).events,
                         until_id=response.json()["id"], marker=mark)
    assert [(e["tenant"], e["_key"]) for e in found] == [("globex", b"globex")]


def test_repeats_by_id_and_by_idempotency_key_replay_the_original_and_append_nothing(
        ingest: TestClient, settings: Settings) -> None:
    mark = marker()
    event_id = f"evt_{mark}"
    first = post(ingest, {"type": "order.paid", "data": {"marker": mark}, "id": event_id})
    again = post(ingest, {"type": "order.paid", "data": {"marker": mark, "v": 2}, "id": event_id})
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"

    keyed = {**ACME, "Idempotency-Key": f"key-{mark}"}
    by_key = post(ingest, {"type": "order.refunded", "data": {"marker": mark}}, keyed)
    by_key_again = post(ingest, {"type": "order.refunded", "data": {"marker": mark}}, keyed)
    assert (by_key.status_code, by_key_again.status_code) == (202, 200)
    assert by_key_again.json() == by_key.json()
    # ...and the id ingest generated for the keyed request is an alias of it too.
    by_its_id = post(ingest, {"type": "order.refunded", "data": {"marker": mark},
                              "id": by_key.json()["id"]})
    assert by_its_id.status_code == 200 and by_its_id.json() == by_key.json()

    # The same id from another tenant is another event.
    other = post(ingest, {"type": "order.paid", "data": {"marker": mark}, "id": event_id}, GLOBEX)
    assert other.status_code == 202 and other.json()["tenant"] == "globex"

    # An id ingest generated is recognised too when a client sends it back.
    generated = post(ingest, {"type": "order.paid", "data": {"marker": mark}})
    echoed = post(ingest, {"type": "order.paid", "data": {"marker": mark},
                           "id": generated.json()["id"]})
    assert echoed.status_code == 200 and echoed.json() == generated.json()

    good = sentinel(ingest, mark)
    found = envelopes_on(settings, Topics.from_settings(settings).events, until_id=good,
                         marker=mark)
    ids = [(e["tenant"], e["id"]) for e in found]
    assert sorted(ids) == sorted([("acme", event_id), ("acme", by_key.json()["id"]),
                                  ("globex", event_id), ("acme", generated.json()["id"]),
                                  ("acme", good)])


def test_batch_returns_a_result_per_item_and_appends_only_the_good_ones(
        ingest: TestClient, settings: Settings) -> None:
    mark = marker()
    events = [
        {"type": "item.one", "data": {"marker": mark}},
        {"type": "Item", "data": {"marker": mark}},
        {"type": "item.two", "data": {"marker": mark}, "id": f"evt_b{mark}"},
        {"type": "item.two", "data": {"marker": mark}, "id": f"evt_b{mark}"},
        {"type": "item.three", "data": {"marker": mark}, "bogus": True},
        {"type": "item.four", "data": {"marker": mark}},
    ]
    response = ingest.post("/v1/events/batch", json={"events": events}, headers=ACME)
    assert response.status_code == 200
    results = response.json()["data"]
    assert [(r["index"], r["status"]) for r in results] == [
        (0, 202), (1, 422), (2, 202), (3, 200), (4, 422), (5, 202)]
    assert results[1]["problem"]["detail"].startswith("type: must be lower-case")
    assert results[4]["problem"]["detail"].startswith("bogus: unknown field")
    assert results[3]["envelope"] == results[2]["envelope"]

    appended = [results[i]["envelope"]["id"] for i in (0, 2, 5)]
    found = envelopes_on(settings, Topics.from_settings(settings).events, until_id=appended[-1],
                         marker=mark)
    # One tenant's events keep the batch order on its partition.
    assert [e["id"] for e in found] == appended


def test_batch_shape_is_checked(ingest: TestClient) -> None:
    too_many = {"events": [{"type": "a.b", "data": {}}] * 1001}
    response = ingest.post("/v1/events/batch", json=too_many, headers=ACME)
    assert response.status_code == 422 and response.json()["detail"].startswith("events:")
    response = ingest.post("/v1/events/batch", json={"events": []}, headers=ACME)
    assert response.status_code == 422
    response = ingest.post("/v1/events/batch", content=b"[", headers=ACME)
    assert response.status_code == 400


def test_metrics_count_accepted_rejected_duplicates_and_latency(ingest: TestClient) -> None:
    def sample(text: str, name: str) -> float:
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name):
                total += float(line.rsplit(" ", 1)[1])
        return total

    before = ingest.get("/metrics").text
    post(ingest, {"type": "m.one", "data": {}, "id": f"evt_m{marker()}"})
    body = {"type": "m.one", "data": {}, "id": f"evt_m{marker()}"}
    post(ingest, body)
    post(ingest, body)
    post(ingest, {"type": "m.one", "data": {}, "nope": 1})
    after = ingest.get("/metrics").text
    assert sample(after, 'webhooks_ingest_accepted_total{source="http"}') \
        - sample(before, 'webhooks_ingest_accepted_total{source="http"}') == 2
    assert sample(after, "webhooks_ingest_duplicate_total") \
        - sample(before, "webhooks_ingest_duplicate_total") == 1
    assert sample(after, 'webhooks_ingest_rejected_total{reason="unknown_field",source="http"}') \
        - sample(before, 'webhooks_ingest_rejected_total{reason="unknown_field",source="http"}') \
        == 1
    assert sample(after, "webhooks_ingest_produce_latency_seconds_count") \
        - sample(before, "webhooks_ingest_produce_latency_seconds_count") == 2


def test_health_reports_kafka_ledger_and_intake(ingest: TestClient) -> None:
    response = ingest.get("/healthz")
    assert response.status_code == 200
    assert response.json()["checks"] == {"kafka": "ok", "idempotency_ledger": "ok",
                                         "registry": "ok", "kafka_intake": "ok"}
    paths = ingest.get("/openapi.json").json()["paths"]
    body = paths["/v1/events"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["properties"]["type"]["pattern"].startswith("^[a-z]")  # refs inlined
    assert "$ref" not in json.dumps(body)
    assert "/v1/events/batch" in paths
