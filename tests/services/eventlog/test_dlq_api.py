"""/v1/dlq against a real broker, sink and ClickHouse: dead tasks written to the DLQ topic
(as the fanout writes them) are listed, paged, fetched, filtered and replayed."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient
from ulid import ULID

from services.eventlog.models import DeadTask, DeadTaskPage
from tests.services.eventlog.conftest import ADMIN, GLOBEX
from tests.services.eventlog.test_endpoints_api import Tenant, tasks_for
from tests.support.eventlog import eventually, make_event
from tests.support.kafka import read_topic
from webhooks.delivery import AttemptRecord, AttemptSummary, DeliveryTask
from webhooks.kafka import create_producer
from webhooks.problems import ProblemDocument
from webhooks.settings import Settings
from webhooks.topics import Topics

T0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def dead_task(tenant: str, endpoint_id: str, type: str = "order.created", attempts: int = 3,
              reason: str | None = None) -> DeliveryTask:
    """A task as the fanout dead-letters it: every attempt failed, history and reason set."""
    history = [AttemptSummary(attempt=n, timestamp=T0 + timedelta(seconds=n), status="failed",
                              response_status=503, error="http_status")
               for n in range(1, attempts + 1)]
    return DeliveryTask(task_id=f"dlv_{ULID()}", endpoint_id=endpoint_id, tenant=tenant,
                        event=make_event(tenant, type), attempt=attempts, history=history,
                        dlq_reason=reason or f"retries exhausted after {attempts} attempts")


def publish_dead(settings: Settings, tasks: Iterable[DeliveryTask],
                 at: datetime | None = None) -> list[DeliveryTask]:
    """Produce dead tasks onto the DLQ topic keyed by endpoint id, as the fanout does;
    ``at`` sets the records' timestamp (the dead-lettering time)."""
    producer = create_producer(settings.kafka)
    topic = Topics.from_settings(settings).dlq
    sent = []
    for task in tasks:
        stamp = {"timestamp": int(at.timestamp() * 1000)} if at else {}
        producer.produce(topic, key=task.key, value=task.to_json(), **stamp)
        sent.append(task)
    assert producer.flush(30) == 0, "Kafka did not acknowledge every dead task"
    return sent


def list_all(tenant: Tenant, **params: Any) -> tuple[list[dict[str, Any]], str]:
    """Page until has_more is false, sending the cursor alone after the first page;
    return every dead task and the last cursor."""
    seen: list[dict[str, Any]] = []
    query = params
    while True:
        response = tenant.call("GET", "/v1/dlq", params=query)
        assert response.status_code == 200, response.text
        body = response.json()
        seen += body["data"]
        query = {"cursor": body["next_cursor"],
                 **({"limit": params["limit"]} if "limit" in params else {})}
        if not body["has_more"]:
            return seen, body["next_cursor"]


def wait_listed(tenant: Tenant, count: int, **params: Any) -> list[dict[str, Any]]:
    def check() -> list[dict[str, Any]] | None:
        seen, _ = list_all(tenant, limit=1000, **params)
        return seen if len(seen) >= count else None
    return eventually(check)


def replay_tasks(settings: Settings, event_ids: set[str]) -> list[DeliveryTask]:
    """Every task for ``event_ids`` on the deliveries topic right now (no waiting for more)."""
    messages = read_topic(settings, Topics.from_settings(settings).deliveries, idle=1.5)
    tasks = [DeliveryTask.from_json(m.value()) for m in messages]
    return [t for t in tasks if t.event.id in event_ids]


def test_dead_tasks_are_listed_and_paged_gap_free_by_the_cursor_alone(
        api: TestClient, eventlog_settings: Settings) -> None:
    tenant = Tenant(api)
    endpoints = [tenant.endpoint(["*"])["id"] for _ in range(3)]
    tasks = publish_dead(eventlog_settings, [dead_task(tenant.name, endpoints[i % 3])
                                             for i in range(8)])
    wait_listed(tenant, len(tasks))

    seen, cursor = list_all(tenant, limit=3)
    assert sorted(d["id"] for d in seen) == sorted(t.task_id for t in tasks)  # each once
    for endpoint in endpoints:  # one endpoint's tasks share a partition: in DLQ order
        assert [d["id"] for d in seen if d["endpoint_id"] == endpoint] == [
            t.task_id for t in tasks if t.endpoint_id == endpoint]
    page = DeadTaskPage.model_validate(tenant.call("GET", "/v1/dlq").json())
    first = next(d for d in page.data if d.id == tasks[0].task_id)
    assert (first.endpoint_id, first.event_id, first.event_type, first.event, first.trigger,
            first.attempts, first.reason, first.last_error, first.last_response_status) == (
        tasks[0].endpoint_id, tasks[0].event.id, "order.created", tasks[0].event, "event", 3,
        "retries exhausted after 3 attempts", "http_status", 503)
    assert first.history == tasks[0].history

    # Resuming later from the last cursor yields exactly what was dead-lettered since.
    later = publish_dead(eventlog_settings, [dead_task(tenant.name, endpoints[i % 3])
                                             for i in range(4)])
    wait_listed(tenant, len(tasks) + len(later))
    after, _ = list_all(tenant, cursor=cursor, limit=3)
    assert sorted(d["id"] for d in after) == sorted(t.task_id for t in later)


def test_filters_by_endpoint_type_and_dead_lettering_time(
        api: TestClient, eventlog_settings: Settings) -> None:
    tenant = Tenant(api)
    first, second = (tenant.endpoint(["*"])["id"] for _ in range(2))
    early = publish_dead(eventlog_settings, [dead_task(tenant.name, first, "order.created"),
                                             dead_task(tenant.name, second, "invoice.paid")],
                         at=T0)
    late = publish_dead(eventlog_settings, [dead_task(tenant.name, first, "order.shipped"),
                                            dead_task(tenant.name, second, "order.created"),
                                            dead_task(tenant.name, first, "invoice.paid")],
                        at=T0 + timedelta(hours=2))
    wait_listed(tenant, 5)

    def ids(**params: Any) -> set[str]:
        return {d["id"] for d in list_all(tenant, limit=1, **params)[0]}

    assert ids(endpoint_id=first) == {early[0].task_id, late[0].task_id, late[2].task_id}
    assert ids(type="order.*") == {early[0].task_id, late[0].task_id, late[1].task_id}
    assert ids(type="invoice.paid", endpoint_id=second) == {early[1].task_id}
    hour = (T0 + timedelta(hours=1)).isoformat()
    assert ids(created_after=hour) == {t.task_id for t in late}
    assert ids(created_before=hour) == {t.task_id for t in early}
    assert ids(created_after=T0.isoformat()) == {t.task_id for t in late}  # exclusive
    listed = tenant.call("GET", "/v1/dlq", params={"created_before": hour}).json()["data"]
    assert {d["dead_lettered_at"] for d in listed} == {"2026-11-20T12:00:00.000000Z"}

    # A cursor carries its filters; other filters with it are refused.
    page = tenant.call("GET", "/v1/dlq", params={"endpoint_id": first, "limit": 1}).json()
    for other in ({"endpoint_id": second}, {"type": "order.*"}):
        response = tenant.call("GET", "/v1/dlq", params={"cursor": page["next_cursor"],
                                                         "endpoint_id": first, **other})
        assert response.status_code == 400, response.text
        assert response.json()["detail"].startswith("cursor")


def test_one_dead_task_by_id(api: TestClient, eventlog_settings: Settings) -> None:
    tenant = Tenant(api)
    endpoint = tenant.endpoint(["*"])["id"]
    task = publish_dead(eventlog_settings, [dead_task(
        tenant.name, endpoint, attempts=1, reason="endpoint disabled: 410 Gone")])[0]
    response = eventually(lambda: (r := tenant.call("GET", f"/v1/dlq/{task.task_id}"))
                          .status_code == 200 and r)
    shown = DeadTask.model_validate(response.json())
    assert (shown.id, shown.reason, shown.attempts, shown.event) == (
        task.task_id, "endpoint disabled: 410 Gone", 1, task.event)
    missing = tenant.call("GET", f"/v1/dlq/dlv_{ULID()}")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"


def test_replay_by_ids_queues_fresh_tasks_for_the_same_events(
        api: TestClient, eventlog_settings: Settings) -> None:
    tenant = Tenant(api)
    endpoint = tenant.endpoint(["*"])["id"]
    dead = publish_dead(eventlog_settings, [dead_task(tenant.name, endpoint) for _ in range(3)])
    wait_listed(tenant, 3)

    chosen = [dead[0].task_id, dead[2].task_id]
    response = tenant.call("POST", "/v1/dlq/replay", json={"ids": chosen})
    assert response.status_code == 202, response.text
    body = response.json()
    assert (body["queued"], body["skipped"], body["skipped_endpoints"]) == (2, 0, [])
    replayed = tasks_for(eventlog_settings, {dead[0].event.id, dead[2].event.id}, 2)
    assert {t.event.id for t in replayed} == {dead[0].event.id, dead[2].event.id}
    for task in replayed:
        assert (task.trigger, task.endpoint_id, task.attempt, task.history,
                task.dlq_reason) == ("replay", endpoint, 1, [], None)
        assert task.task_id not in chosen  # a fresh task; the dead one stays in the log
    assert sorted(t["task_id"] for t in body["tasks"]) == sorted(t.task_id for t in replayed)
    assert len(list_all(tenant)[0]) == 3


def test_replay_by_endpoint_replays_all_of_its_tasks_and_skips_gone_endpoints(
        api: TestClient, eventlog_settings: Settings) -> None:
    tenant = Tenant(api)
    kept, paused, deleted = (tenant.endpoint(["*"])["id"] for _ in range(3))
    dead = publish_dead(eventlog_settings, [
        *(dead_task(tenant.name, kept) for _ in range(3)),
        *(dead_task(tenant.name, paused, "invoice.paid") for _ in range(2)),
        dead_task(tenant.name, deleted)])
    wait_listed(tenant, len(dead))
    assert tenant.call("PATCH", f"/v1/endpoints/{paused}",
                       json={"disabled": True}).status_code == 200
    assert tenant.call("DELETE", f"/v1/endpoints/{deleted}").status_code == 204

    mine = tenant.call("POST", "/v1/dlq/replay", json={"endpoint_id": kept})
    assert mine.status_code == 202, mine.text
    assert (mine.json()["queued"], mine.json()["skipped"]) == (3, 0)
    everything = tenant.call("POST", "/v1/dlq/replay",
                             json={"created_after": "2026-01-01T00:00:00Z"}).json()
    assert (everything["queued"], everything["skipped"]) == (3, 3)
    assert everything["skipped_endpoints"] == sorted(
        [{"endpoint_id": paused, "reason": "disabled"},
         {"endpoint_id": deleted, "reason": "deleted"}], key=lambda s: s["endpoint_id"])
    tasks = tasks_for(eventlog_settings, {t.event.id for t in dead}, 6)
    assert sorted(t.endpoint_id for t in tasks) == [kept] * 6
    assert {t.trigger for t in tasks} == {"replay"}


BAD_REQUESTS = [
    ("GET", "/v1/dlq", {"limit": 0}, None, 400),
    ("GET", "/v1/dlq", {"limit": 1001}, None, 400),
    ("GET", "/v1/dlq", {"type": "Order Shipped"}, None, 400),
    ("GET", "/v1/dlq", {"endpoint_id": "not-an-endpoint"}, None, 400),
    ("GET", "/v1/dlq", {"created_after": "2026-11-02T00:00:00Z",
                        "created_before": "2026-11-01T00:00:00Z"}, None, 400),
    ("GET", "/v1/dlq", {"created_after": "yesterday"}, None, 400),
    ("GET", "/v1/dlq", {"cursor": "garbage"}, None, 400),
    ("GET", f"/v1/dlq/dlv_{'x' * 100}", {}, None, 400),
    ("POST", "/v1/dlq/replay", {}, {}, 400),
    ("POST", "/v1/dlq/replay", {}, {"ids": []}, 422),
    ("POST", "/v1/dlq/replay", {}, {"ids": [f"dlv_{n}" for n in range(1001)]}, 422),
    ("POST", "/v1/dlq/replay", {}, {"ids": "dlv_1"}, 422),
    ("POST", "/v1/dlq/replay", {}, {"everything": True}, 422),
    ("POST", "/v1/dlq/replay", {}, {"type": "Order Shipped"}, 422),
    ("POST", "/v1/dlq/replay", {}, {"endpoint_id": "nope"}, 422),
    ("POST", "/v1/dlq/replay", {}, {"created_after": "2026-11-02T00:00:00Z",
                                    "created_before": "2026-11-01T00:00:00Z"}, 422),
    ("POST", "/v1/dlq/replay", {}, {"created_after": "soon"}, 422),
    ("POST", "/v1/dlq/replay", {}, b"{not json", 400),
]


def test_bad_input_answers_a_4xx_problem_and_queues_nothing(
        api: TestClient, eventlog_settings: Settings) -> None:
    tenant = Tenant(api)
    endpoint = tenant.endpoint(["*"])["id"]
    dead = publish_dead(eventlog_settings, [dead_task(tenant.name, endpoint)
                                            for _ in range(2)])
    wait_listed(tenant, 2)
    known = dead[0].task_id
    cases = [*BAD_REQUESTS,
             # Requests that would replay real tasks if they were not refused whole.
             ("POST", "/v1/dlq/replay", {}, {"ids": [known], "endpoint_id": endpoint}, 400),
             ("POST", "/v1/dlq/replay", {}, {"ids": [known, f"dlv_{ULID()}"]}, 404),
             ("POST", "/v1/dlq/replay", {}, {"endpoint_id": endpoint, "bogus": 1}, 422)]
    for method, path, params, body, status in cases:
        sent = ({"content": body, "headers": {"content-type": "application/json"}}
                if isinstance(body, bytes) else {"json": body} if body is not None else {})
        response = tenant.call(method, path, params=params, **sent)
        assert response.status_code == status, (method, path, params, body, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        ProblemDocument.model_validate(response.json())
    assert replay_tasks(eventlog_settings, {t.event.id for t in dead}) == []


def test_other_tenants_see_none_of_it_and_cannot_replay_it(
        api: TestClient, eventlog_settings: Settings) -> None:
    tenant = Tenant(api)
    endpoint = tenant.endpoint(["*"])["id"]
    dead = publish_dead(eventlog_settings, [dead_task(tenant.name, endpoint)
                                            for _ in range(2)])
    wait_listed(tenant, 2)
    ids = [t.task_id for t in dead]

    listed = api.get("/v1/dlq", params={"limit": 1000}, headers=GLOBEX).json()["data"]
    assert not {d["id"] for d in listed} & set(ids)
    assert api.get(f"/v1/dlq/{ids[0]}", headers=GLOBEX).status_code == 404
    assert api.post("/v1/dlq/replay", json={"ids": ids}, headers=GLOBEX).status_code == 404
    by_endpoint = api.post("/v1/dlq/replay", json={"endpoint_id": endpoint}, headers=GLOBEX)
    assert by_endpoint.status_code == 202 and by_endpoint.json()["queued"] == 0
    everything = api.post("/v1/dlq/replay", json={"type": "*"}, headers=GLOBEX)
    assert everything.status_code == 202
    # A tenant key cannot name another tenant; an admin key must name one.
    assert api.get("/v1/dlq", params={"tenant": tenant.name},
                   headers=GLOBEX).status_code == 403
    assert api.post("/v1/dlq/replay", params={"tenant": tenant.name}, json={"ids": ids},
                    headers=GLOBEX).status_code == 403
    assert api.get("/v1/dlq", headers=ADMIN).status_code == 400
    # A cursor of one tenant's listing is no use to another.
    cursor = tenant.call("GET", "/v1/dlq", params={"limit": 1}).json()["next_cursor"]
    assert api.get("/v1/dlq", params={"cursor": cursor}, headers=GLOBEX).status_code == 400
    assert replay_tasks(eventlog_settings, {t.event.id for t in dead}) == []


def test_openapi_documents_the_dlq_api(api: TestClient) -> None:
    schema = api.get("/openapi.json").json()
    listing = schema["paths"]["/v1/dlq"]["get"]
    assert {p["name"] for p in listing["parameters"]} >= {
        "endpoint_id", "type", "created_after", "created_before", "limit", "cursor", "tenant"}
    after = next(p for p in listing["parameters"] if p["name"] == "created_after")
    assert "dead-lettered" in after["description"]
    assert listing["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/DeadTaskPage"}
    replay = schema["paths"]["/v1/dlq/replay"]["post"]
    assert {"202", "400", "404", "422"} <= set(replay["responses"])
    assert "/v1/dlq/{task_id}" in schema["paths"]


def test_the_replay_trigger_is_in_the_published_schemas() -> None:
    """Replayed tasks and their attempt records pass the schemas every service checks."""
    task = dead_task("acme", "ep_1").model_copy(update={"trigger": "replay"})
    task.check_schema()
    AttemptRecord(task_id=task.task_id, event_id=task.event.id, event_type=task.event.type,
                  endpoint_id=task.endpoint_id, tenant="acme", attempt=1, trigger="replay",
                  url="https://example.com/hook", status="succeeded", latency_ms=1.0,
                  outcome="delivered").check_schema()
