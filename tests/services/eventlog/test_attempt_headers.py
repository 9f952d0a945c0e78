"""Attempt headers end to end: the real fanout worker (its own process) delivers to a real
receiver, the sink stores the attempt records, and the attempts API and the dashboard
show the request's headers as the receiver got them (a secret custom header masked) and
the response's (cut at 4 KiB). Attempt records written before headers were kept still
read, with null headers."""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from html import unescape
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from standardwebhooks.webhooks import Webhook

from services.localdev.service_process import ServiceProcess
from tests.services.eventlog.conftest import ACME, GLOBEX
from tests.services.eventlog.test_dashboard import Browser
from tests.support.eventlog import eventually, make_event, publish_events
from tests.support.receiver import Received, Receiver
from webhooks.delivery import AttemptRecord
from webhooks.endpoints import MASKED
from webhooks.kafka import create_producer
from webhooks.settings import Settings
from webhooks.topics import Topics

OK_PATH, BIG_PATH = "/headers-ok", "/headers-big"
SECRET_VALUE = "Bearer s3cret-not-for-logs"
BIG_HEADERS = {f"x-filler-{n:02d}": "f" * 200 for n in range(40)}  # ~8.9 KiB


def header_rows(page: str, table: str) -> list[tuple[str, str]]:
    """The (name, value) rows of the page's header table ``table`` (its data-testid)."""
    found = re.search(rf'<table class="headers" data-testid="{table}">(.*?)</table>', page,
                      re.DOTALL)
    assert found, f"no {table} table"
    return [(unescape(name), unescape(value)) for name, value in re.findall(
        r'<th scope="row"><code>(.*?)</code></th><td><code class="value">(.*?)</code>',
        found.group(1), re.DOTALL)]


@dataclass
class Delivered:
    """One event delivered to two endpoints, as the receiver got it and the API shows it."""

    event_id: str
    ok: dict[str, Any]  # the endpoint as created (with its secret)
    big: dict[str, Any]
    request: Received  # what the receiver got at OK_PATH
    ok_attempt: dict[str, Any]  # the attempt as GET …/attempts lists it
    big_attempt: dict[str, Any]


def attempts_of(api: TestClient, endpoint_id: str, event_id: str) -> list[dict[str, Any]]:
    answer = api.get(f"/v1/endpoints/{endpoint_id}/attempts", params={"event_id": event_id},
                     headers=ACME)
    assert answer.status_code == 200, answer.text
    return answer.json()["data"]


@pytest.fixture(scope="module")
def delivered(api: TestClient, settings: Settings, receiver: Receiver) -> Iterator[Delivered]:
    def create(path: str, headers: list[dict[str, Any]]) -> dict[str, Any]:
        created = api.post("/v1/endpoints", headers=ACME, json={
            "url": receiver.url(path), "events": ["order.*"], "headers": headers})
        assert created.status_code == 201, created.text
        return created.json()

    receiver.on(OK_PATH, lambda n: (200, {"x-request-id": f"req-{n}"}, 0.0))
    receiver.on(BIG_PATH, lambda n: (503, BIG_HEADERS, 0.0))
    ok = create(OK_PATH, [{"name": "Authorization", "value": SECRET_VALUE, "secret": True},
                          {"name": "X-Tenant", "value": "acme"}])
    big = create(BIG_PATH, [])
    log = Path(tempfile.gettempdir()) / "fanout-test-logs"
    log.mkdir(exist_ok=True)
    # Started after the endpoints exist: a worker matches only once its view caught up.
    with ServiceProcess("fanout", settings, log / f"{settings.topic_prefix}-headers.log"):
        event = publish_events(settings, [make_event("acme", "order.shipped")])[0]
        [request] = receiver.wait_for(OK_PATH, 1)
        receiver.wait_for(BIG_PATH, 1)
        ok_attempt = eventually(lambda: attempts_of(api, ok["id"], event.id))[0]
        big_attempt = eventually(lambda: attempts_of(api, big["id"], event.id))[0]
        yield Delivered(event.id, ok, big, request, ok_attempt, big_attempt)


def test_the_attempts_api_shows_the_request_headers_the_receiver_got(
        delivered: Delivered) -> None:
    attempt, request = delivered.ok_attempt, delivered.request
    assert (attempt["status"], attempt["response_status"]) == ("succeeded", 200)
    sent = attempt["request_headers"]
    assert all(len(pair) == 2 for pair in sent)
    by_name = {name.lower(): value for name, value in sent}
    for name in ("webhook-id", "webhook-timestamp", "webhook-signature", "content-type",
                 "user-agent", "host", "content-length", "x-tenant"):
        assert by_name[name] == request.headers[name], name
    assert by_name["webhook-id"] == delivered.event_id
    # The recorded signature verifies the body the receiver got: what a receiver's
    # developer needs to debug their verification.
    Webhook(delivered.ok["secret"]).verify(request.body, by_name)
    # The secret custom header went out, and was kept masked.
    assert request.headers["authorization"] == SECRET_VALUE
    assert by_name["authorization"] == MASKED
    assert SECRET_VALUE not in json.dumps(attempt)


def test_the_attempts_api_shows_the_response_headers(delivered: Delivered) -> None:
    attempt = delivered.ok_attempt
    got = {name.lower(): value for name, value in attempt["response_headers"]}
    assert got["x-request-id"] == "req-1"
    assert got["content-length"] == str(len(b'{"received":true}'))
    assert "server" in got and "date" in got
    assert attempt["response_headers_truncated"] is False


def test_oversized_response_headers_are_cut_at_4_kib(delivered: Delivered) -> None:
    attempt = delivered.big_attempt
    assert (attempt["error"], attempt["response_status"]) == ("http_status", 503)
    assert attempt["response_headers_truncated"] is True
    kept = attempt["response_headers"]
    wire = sum(len(n.encode()) + len(v.encode()) + 4 for n, v in kept)
    assert 4096 - 220 < wire <= 4096
    fillers = [value for name, value in kept if name.startswith("x-filler-")]
    assert fillers[:-1] == ["f" * 200] * (len(fillers) - 1) and len(fillers[-1]) <= 200
    assert len(fillers) < len(BIG_HEADERS)


def test_one_attempt_by_id_and_from_the_events_deliveries(api: TestClient,
                                                          delivered: Delivered) -> None:
    endpoint, attempt = delivered.ok["id"], delivered.ok_attempt
    one = api.get(f"/v1/endpoints/{endpoint}/attempts/{attempt['id']}", headers=ACME)
    assert one.status_code == 200 and one.json() == attempt
    detail = api.get(f"/v1/events/{delivered.event_id}", headers=ACME).json()
    last = {d["endpoint_id"]: d["last_attempt_id"] for d in detail["deliveries"]}
    assert last[endpoint] == attempt["id"]
    big = api.get(f"/v1/endpoints/{delivered.big['id']}/attempts/{last[delivered.big['id']]}",
                  headers=ACME).json()
    assert big["response_headers_truncated"] is True
    # Another tenant's attempt, an unknown one, or one asked for under another endpoint.
    assert api.get(f"/v1/endpoints/{endpoint}/attempts/{attempt['id']}",
                   headers=GLOBEX).status_code == 404
    assert api.get(f"/v1/endpoints/{endpoint}/attempts/att_nope",
                   headers=ACME).status_code == 404
    assert api.get(f"/v1/endpoints/{delivered.big['id']}/attempts/{attempt['id']}",
                   headers=ACME).status_code == 404


@pytest.fixture(scope="module")
def old_attempt(api: TestClient, settings: Settings, delivered: Delivered) -> dict[str, Any]:
    """An attempt record as a version without the header fields wrote it, once listed."""
    endpoint = delivered.big["id"]
    old = AttemptRecord(
        task_id="dlv_old", event_id="evt_old1", event_type="order.created",
        endpoint_id=endpoint, tenant="acme", attempt=1, trigger="event",
        url=delivered.big["url"], status="failed", response_status=500,
        response_body="old", error="http_status", latency_ms=2.0, outcome="retrying")
    document = old.model_dump(mode="json", exclude={
        "request_headers", "response_headers", "response_headers_truncated"})
    producer = create_producer(settings.kafka)
    producer.produce(Topics.from_settings(settings).attempts, key=endpoint.encode(),
                     value=json.dumps(document).encode())
    assert producer.flush(30) == 0
    [listed] = eventually(lambda: attempts_of(api, endpoint, "evt_old1"))
    assert listed["id"] == old.id and listed["response_body"] == "old"
    return listed


def test_attempt_records_written_before_headers_were_kept_still_read(
        api: TestClient, delivered: Delivered, old_attempt: dict[str, Any]) -> None:
    assert (old_attempt["request_headers"], old_attempt["response_headers"],
            old_attempt["response_headers_truncated"]) == (None, None, False)
    one = api.get(f"/v1/endpoints/{delivered.big['id']}/attempts/{old_attempt['id']}", headers=ACME)
    assert one.status_code == 200 and one.json() == old_attempt


def test_the_dashboard_attempt_view_shows_the_headers(
        api: TestClient, delivered: Delivered, old_attempt: dict[str, Any]) -> None:
    browser = Browser(api)
    assert browser.sign_in("key-acme").status_code == 303
    endpoint, attempt = delivered.ok["id"], delivered.ok_attempt
    address = f"/dashboard/endpoints/{endpoint}/attempts/{attempt['id']}"
    # Reached from the endpoint's attempts and from the event's deliveries.
    assert address in browser.page(f"/dashboard/endpoints/{endpoint}").text
    assert address in browser.page(f"/dashboard/events/{delivered.event_id}").text

    page = browser.page(address).text
    shown = header_rows(page, "request_headers")
    assert shown == [tuple(pair) for pair in attempt["request_headers"]]
    assert ("Authorization", MASKED) in shown and SECRET_VALUE not in page
    assert {"webhook-id", "webhook-timestamp", "webhook-signature"} <= {n for n, _ in shown}
    assert ("x-request-id", "req-1") in header_rows(page, "response_headers")
    assert 'data-testid="truncated"' not in page

    big = browser.page(f"/dashboard/endpoints/{delivered.big['id']}/attempts/"
                       f"{delivered.big_attempt['id']}").text
    assert 'data-testid="truncated"' in big
    assert header_rows(big, "response_headers") == [
        tuple(pair) for pair in delivered.big_attempt["response_headers"]]

    old = browser.page(f"/dashboard/endpoints/{delivered.big['id']}/attempts/"
                       f"{old_attempt['id']}").text
    assert "before headers were recorded" in old and 'class="headers"' not in old

    missing = browser.client.get(f"/dashboard/endpoints/{endpoint}/attempts/att_nope")
    assert missing.status_code == 404 and "att_nope" in unescape(missing.text)
