"""GET /v1/events and /v1/events/{id} against a real broker, sink and ClickHouse."""

from __future__ import annotations

import base64
import random
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from services.eventlog.cursor import Cursor, cursor_key, request_binding
from services.eventlog.event_store import EventFilters
from services.eventlog.models import EventDetail, EventPage
from tests.services.eventlog.conftest import ACME, ADMIN, GLOBEX
from tests.support.eventlog import (
    eventually,
    make_event,
    page_all,
    publish_attempts,
    publish_events,
)
from webhooks.delivery import AttemptRecord
from webhooks.problems import ProblemDocument
from webhooks.settings import Settings

BASE = datetime(2026, 11, 1, tzinfo=UTC)


def fresh_tenant() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


def as_admin(tenant: str) -> dict[str, str]:
    return {"tenant": tenant}


def wait_for_count(api: TestClient, tenant: str, count: int) -> list[dict]:
    def check() -> list[dict] | None:
        seen, _ = page_all(api, ADMIN, tenant=tenant, limit=1000)
        return seen if len(seen) >= count else None
    return eventually(check)


def test_concurrent_producer_and_pager_see_each_event_exactly_once(
        api: TestClient, eventlog_settings: Settings) -> None:
    """Events arrive in bursts with shuffled `created` times while a client keeps paging
    and resuming from its last cursor: it ends with every event once, in log order."""
    tenant, other = fresh_tenant(), fresh_tenant()
    sent: list[str] = []
    done = threading.Event()

    def produce() -> None:
        rng = random.Random(7)
        for _burst in range(12):
            events = []
            for _ in range(50):
                created = BASE + timedelta(seconds=rng.randrange(0, 10_000))  # out of order
                events.append(make_event(tenant, "order.created", created))
                events.append(make_event(other, "order.created", created))
            publish_events(eventlog_settings, events)
            sent.extend(e.id for e in events if e.tenant == tenant)
            time.sleep(rng.uniform(0.0, 0.15))
        done.set()

    producer = threading.Thread(target=produce)
    producer.start()
    seen: list[dict] = []
    cursor = None
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        finished = done.is_set()
        page, cursor = page_all(api, ADMIN, cursor, tenant=tenant, limit=37)
        seen += page
        if finished and len(seen) >= len(sent):
            break
        time.sleep(0.05)
    producer.join()

    ids = [event["id"] for event in seen]
    assert len(sent) == 600
    assert [i for i, n in Counter(ids).items() if n > 1] == []
    assert ids == sent  # nothing missing, nothing extra, in the order Kafka holds them
    created = [event["created"] for event in seen]
    assert created != sorted(created), "the test must exercise out-of-order created times"
    assert {event["tenant"] for event in seen} == {tenant}
    # Resuming later from the last cursor yields exactly what arrived since.
    late = publish_events(eventlog_settings, [make_event(tenant, "order.paid")])
    eventually(lambda: page_all(api, ADMIN, cursor, tenant=tenant, limit=37)[0])
    after, _ = page_all(api, ADMIN, cursor, tenant=tenant, limit=37)
    assert [e["id"] for e in after] == [late[0].id]


def test_filters_and_limits(api: TestClient, eventlog_settings: Settings) -> None:
    tenant = fresh_tenant()
    events = [make_event(tenant, kind, BASE + timedelta(minutes=i))
              for i, kind in enumerate(["order.created", "order.shipped", "order.line.added",
                                        "customer.created", "orders.x"] * 25)]
    publish_events(eventlog_settings, events)
    wait_for_count(api, tenant, len(events))

    first = api.get("/v1/events", params=as_admin(tenant), headers=ADMIN).json()
    assert len(first["data"]) == 100 and first["has_more"] is True  # default limit
    assert [e["id"] for e in first["data"]] == [e.id for e in events[:100]]

    one = api.get("/v1/events", params={**as_admin(tenant), "limit": 1}, headers=ADMIN).json()
    assert len(one["data"]) == 1 and one["has_more"]

    def ids(**params: object) -> list[str]:
        return [e["id"] for e in page_all(api, ADMIN, tenant=tenant, limit=7, **params)[0]]

    assert ids(type="order.shipped") == [e.id for e in events if e.type == "order.shipped"]
    assert ids(type="order.*") == [e.id for e in events if e.type.startswith("order.")]
    assert ids(type="*") == [e.id for e in events]
    after, before = BASE + timedelta(minutes=10), BASE + timedelta(minutes=20)
    assert ids(created_after=after.isoformat(), created_before=before.isoformat()) == [
        e.id for e in events if after < e.created < before]
    assert ids(type="customer.*", created_after=after.isoformat()) == [
        e.id for e in events if e.type.startswith("customer.") and e.created > after]


@pytest.mark.parametrize("params, named", [
    ({"limit": 0}, "limit"), ({"limit": 1001}, "limit"), ({"limit": "many"}, "limit"),
    ({"type": "Order Shipped"}, "type"), ({"type": "order.*.x"}, "type"),
    ({"type": "x" * 129}, "type"), ({"created_after": "yesterday"}, "created_after"),
    ({"created_after": "2026-11-02T00:00:00Z", "created_before": "2026-11-01T00:00:00Z"},
     "created_after"),
    ({"tenant": "no such tenant!"}, "tenant"),
    ({"cursor": "garbage"}, "cursor"), ({"cursor": "e30.AAAA"}, "cursor"),
    ({"cursor": "%%%.???"}, "cursor"),
])
def test_bad_parameters_get_400_problem_answers(api: TestClient, params: dict, named: str
                                                ) -> None:
    response = api.get("/v1/events", params=params, headers=ACME)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == 400 and problem["detail"].startswith(f"{named}")
    assert problem.get("code") == (None if named == "cursor" else "invalid_parameter")


def test_a_bad_path_parameter_gets_400(api: TestClient) -> None:
    response = api.get(f"/v1/events/evt_{'x' * 100}", headers=ACME)
    assert response.status_code == 400, response.text
    assert response.json()["detail"].startswith("event_id (path parameter): ")


def test_cursors_carry_their_filters_and_are_bound_to_their_request(
        api: TestClient, eventlog_settings: Settings) -> None:
    tenant = fresh_tenant()
    publish_events(eventlog_settings, [make_event(tenant, "order.created"),
                                       make_event(tenant, "invoice.paid"),
                                       make_event(tenant, "order.shipped"),
                                       make_event("globex")])
    eventually(lambda: api.get("/v1/events", headers=GLOBEX).json()["data"])
    wait_for_count(api, tenant, 3)
    first = api.get("/v1/events", params={"type": "order.*", "limit": 1, "tenant": tenant},
                    headers=ADMIN).json()
    cursor = first["next_cursor"]
    assert [e["type"] for e in first["data"]] == ["order.created"]
    same = api.get("/v1/events", params={"type": "order.*", "cursor": cursor,
                                         "tenant": tenant}, headers=ADMIN)
    assert same.status_code == 200
    # The cursor alone continues its listing: type=order.* still applies.
    alone = api.get("/v1/events", params={"cursor": cursor, "tenant": tenant},
                    headers=ADMIN)
    assert alone.status_code == 200
    assert [e["type"] for e in alone.json()["data"]] == ["order.shipped"] == [
        e["type"] for e in same.json()["data"]]

    def status(headers: dict[str, str], **params: str) -> int:
        response = api.get("/v1/events", params={"cursor": cursor, **params}, headers=headers)
        assert response.headers["content-type"].startswith("application/")
        return response.status_code

    assert status(ADMIN, tenant=tenant, type="order.created") == 400  # other filters
    assert status(ADMIN, tenant=tenant, type="order.*",
                  created_after="2026-01-01T00:00:00Z") == 400  # more filters
    assert status(ADMIN, tenant="globex") == 400  # another tenant
    assert status(GLOBEX) == 400
    body, mac = cursor.split(".")
    payload = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    for forged in (payload.replace(b'"p":{', b'"p":{"9":0,'),
                   payload.replace(b'"order.*"', b'"*"')):  # widened filters
        forged_token = base64.urlsafe_b64encode(forged).rstrip(b"=").decode() + "." + mac
        assert status(ADMIN, tenant=tenant, cursor=forged_token) == 400  # tampered
    flipped = cursor[:-2] + ("A" if cursor[-2] != "A" else "B") + cursor[-1]
    assert status(ADMIN, tenant=tenant, cursor=flipped) == 400


def test_a_cursor_issued_before_filters_travelled_still_resumes_with_its_filters(
        api: TestClient, eventlog_settings: Settings) -> None:
    """Version 1 tokens (only a digest of the filters) saved by clients keep working
    when sent with the filters they were issued for, as they always did."""
    tenant = fresh_tenant()
    events = publish_events(eventlog_settings, [make_event(tenant, "order.created")
                                                for _ in range(3)])
    wait_for_count(api, tenant, 3)
    first = api.get("/v1/events", params={"type": "order.*", "limit": 1, "tenant": tenant},
                    headers=ADMIN).json()
    key = cursor_key(eventlog_settings)
    binding = request_binding("events", tenant, EventFilters(types=("order.*",)).describe())
    old = Cursor(Cursor.decode(first["next_cursor"], binding, key).positions).encode(
        binding, key)
    resumed = api.get("/v1/events", params={"type": "order.*", "cursor": old,
                                            "tenant": tenant}, headers=ADMIN)
    assert resumed.status_code == 200, resumed.text
    assert [e["id"] for e in resumed.json()["data"]] == [e.id for e in events[1:]]
    assert api.get("/v1/events", params={"cursor": old, "tenant": tenant},
                   headers=ADMIN).status_code == 400  # v1 cannot name its filters


def test_tenants_only_see_their_own_events(api: TestClient, eventlog_settings: Settings
                                           ) -> None:
    mine = publish_events(eventlog_settings, [make_event("acme", "invoice.paid")])[0]
    eventually(lambda: api.get(f"/v1/events/{mine.id}", headers=ACME).status_code == 200)
    assert api.get(f"/v1/events/{mine.id}", headers=GLOBEX).status_code == 404
    assert api.post(f"/v1/events/{mine.id}/redeliver", headers=GLOBEX).status_code == 404
    globex_ids = [e["id"] for e in page_all(api, GLOBEX, limit=1000)[0]]
    assert mine.id not in globex_ids
    assert all(e["tenant"] == "globex" for e in page_all(api, GLOBEX, limit=1000)[0])
    assert api.get(f"/v1/events/{mine.id}", params={"tenant": "acme"},
                   headers=ADMIN).status_code == 200
    assert api.get(f"/v1/events/{mine.id}", params={"tenant": "globex"},
                   headers=ADMIN).status_code == 404
    assert api.get("/v1/events", headers=ADMIN).status_code == 400  # admin must name a tenant
    assert api.get("/v1/events", params={"tenant": "acme"}, headers=GLOBEX).status_code == 403
    assert api.get("/v1/events").status_code == 401
    assert api.get("/v1/events", headers={"Authorization": "Bearer nope"}).status_code == 401


def test_event_detail_shows_delivery_status_per_endpoint(
        api: TestClient, eventlog_settings: Settings) -> None:
    event = publish_events(eventlog_settings, [make_event("acme", "order.shipped")])[0]

    def attempt(endpoint: str, number: int, status: str, code: int | None,
                error: str | None = None) -> AttemptRecord:
        return AttemptRecord(task_id="dlv_1", event_id=event.id, event_type=event.type,
                             endpoint_id=endpoint, tenant="acme", attempt=number,
                             trigger="event", url="https://example.com/hook", status=status,
                             response_status=code, error=error, latency_ms=12.5,
                             timestamp=f"2026-11-22T10:00:0{number}.000000Z",
                             outcome="delivered" if status == "succeeded" else "retrying")

    records = [attempt("ep_A", 1, "failed", 500, "http_500"),
               attempt("ep_A", 2, "succeeded", 200),
               attempt("ep_B", 1, "failed", None, "timeout"),
               attempt("ep_C", 1, "failed", 503, "http_503"),
               attempt("ep_C", 2, "failed", None, "timeout")]
    publish_attempts(eventlog_settings, records + records[:1])  # a duplicate record too

    def detail() -> dict | None:
        response = api.get(f"/v1/events/{event.id}", headers=ACME)
        body = response.json() if response.status_code == 200 else {}
        return body if len(body.get("deliveries", [])) == 3 else None

    body = eventually(detail)
    assert {k: body[k] for k in ("id", "type", "tenant", "data")} == {
        "id": event.id, "type": event.type, "tenant": "acme", "data": event.data}
    by_endpoint = {d["endpoint_id"]: d for d in body["deliveries"]}
    assert by_endpoint["ep_A"]["attempts"] == 2 and by_endpoint["ep_A"]["delivered"] is True
    assert by_endpoint["ep_A"]["last_status"] == "succeeded"
    assert by_endpoint["ep_A"]["last_response_status"] == 200
    assert by_endpoint["ep_A"]["last_error"] is None  # the earlier failure is over
    assert by_endpoint["ep_C"]["last_response_status"] is None  # the latest got no answer
    assert by_endpoint["ep_C"]["last_error"] == "timeout"
    assert by_endpoint["ep_B"]["attempts"] == 1 and by_endpoint["ep_B"]["delivered"] is False
    assert by_endpoint["ep_B"]["last_attempt_at"] == "2026-11-22T10:00:01.000000Z"
    assert api.get("/v1/events/evt_missing", headers=ACME).status_code == 404


def test_openapi_documents_the_api(api: TestClient, eventlog_settings: Settings) -> None:
    """The published models describe what the API really answers."""
    event = publish_events(eventlog_settings, [make_event("acme", "order.refunded")])[0]
    eventually(lambda: api.get(f"/v1/events/{event.id}", headers=ACME).status_code == 200)
    page = EventPage.model_validate(api.get("/v1/events", headers=ACME).json())
    assert event.id in [e.id for e in page.data]
    EventDetail.model_validate(api.get(f"/v1/events/{event.id}", headers=ACME).json())
    ProblemDocument.model_validate(api.get("/v1/events?limit=0", headers=ACME).json())
    schema = api.get("/openapi.json").json()
    listing = schema["paths"]["/v1/events"]["get"]
    assert listing["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/EventPage"}
    assert listing["responses"]["400"]["content"]["application/problem+json"]
    assert "422" not in listing["responses"]  # parameters answer 400; no body here
    assert "422" in schema["paths"]["/v1/endpoints"]["post"]["responses"]
    assert "Problem" in schema["components"]["schemas"]
    assert {p["name"] for p in listing["parameters"]} >= {
        "type", "created_after", "created_before", "limit", "cursor", "tenant"}
    assert "/v1/endpoints/{endpoint_id}/recover" in schema["paths"]
    assert api.get("/healthz").json()["checks"] == {"kafka": "ok", "clickhouse": "ok",
                                                    "sink": "ok", "registry": "ok"}
