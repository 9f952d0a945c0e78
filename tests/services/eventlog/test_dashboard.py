"""The dashboard's pages and actions against a real broker, sink and ClickHouse: sign-in,
cookie flags, CSRF refusals that change nothing, every page, and tenant isolation;
sign-in with managed keys (re-checked at every request), scopes, and admin sign-in links."""

from __future__ import annotations

import base64
import json
import re
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from html import unescape
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from services.eventlog.dashboard import pages
from services.eventlog.dashboard.session import NotConfigured, SessionSigner
from tests.services.eventlog.conftest import ACME, ADMIN
from tests.services.eventlog.test_dlq_api import dead_task, publish_dead
from tests.support.eventlog import eventually, make_event, publish_attempts, publish_events
from tests.support.kafka import read_topic
from webhooks.acked_producer import AckedProducer
from webhooks.auth import bootstrap_principal
from webhooks.delivery import AttemptRecord, DeliveryTask
from webhooks.endpoint_verification import settled
from webhooks.endpoints import Endpoint
from webhooks.envelope import Envelope
from webhooks.settings import Settings
from webhooks.topics import Topics

RECEIVER_ANSWER = "upstream database is down (dashboard test)"


class Browser:
    """A cookie-keeping client of the dashboard, as a browser would use it."""

    def __init__(self, api: TestClient) -> None:
        # Its own client (own cookie jar) on the module's app; the app's lifespan (the
        # sink) is already running under ``api``.
        self.client = TestClient(api.app, follow_redirects=False)

    def session_cookie(self) -> str | None:
        return self.client.cookies.get("webhooks_dashboard")

    def sign_in(self, api_key: str, tenant: str = "") -> httpx.Response:
        form = self.client.get("/dashboard/sign-in")
        token = hidden(form.text, "sign_in_token")
        return self.client.post("/dashboard/sign-in", data={
            "sign_in_token": token, "api_key": api_key, "tenant": tenant})

    def page(self, path: str, **params: Any) -> httpx.Response:
        response = self.client.get(path, params=params)
        assert response.status_code == 200, (path, response.status_code, response.text[:500])
        return response

    def csrf(self) -> str:
        return hidden(self.page("/dashboard/endpoints").text, "csrf_token")

    def post(self, path: str, data: dict[str, Any] | None = None, csrf: str | None = "auto"
             ) -> httpx.Response:
        fields = dict(data or {})
        if csrf == "auto":
            fields["csrf_token"] = self.csrf()
        elif csrf is not None:
            fields["csrf_token"] = csrf
        return self.client.post(path, data=fields)


def hidden(html: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]+)"', html)
    assert found, f"no hidden field {name}"
    return found.group(1)


@dataclass
class Seeded:
    """One tenant's data: a failing and a healthy endpoint, events, attempts, a dead task."""

    failing: dict[str, Any]
    healthy: dict[str, Any]
    events: list[Envelope]
    dead: DeliveryTask


def seed(api: TestClient, settings: Settings, tenant: str, key: str, marker: str) -> Seeded:
    headers = {"Authorization": f"Bearer {key}"}

    def endpoint(path: str) -> dict[str, Any]:
        response = api.post("/v1/endpoints", headers=headers, json={
            "url": f"http://127.0.0.1:9/{marker}/{path}", "events": ["order.*"],
            "description": f"{marker} {path}"})
        assert response.status_code == 201, response.text
        return response.json()

    failing, healthy = endpoint("failing"), endpoint("healthy")
    events = publish_events(settings, [make_event(tenant, "order.created", n=i, marker=marker)
                                       for i in range(3)])
    attempts = []
    for event in events:
        attempts.append(AttemptRecord(
            task_id="dlv_x", event_id=event.id, event_type=event.type,
            endpoint_id=failing["id"], tenant=tenant, attempt=1, trigger="event",
            url=failing["url"], status="failed", response_status=503,
            response_body=f"{RECEIVER_ANSWER} {marker}", error="http_status",
            latency_ms=12.5, outcome="retrying"))
        attempts.append(AttemptRecord(
            task_id="dlv_y", event_id=event.id, event_type=event.type,
            endpoint_id=healthy["id"], tenant=tenant, attempt=1, trigger="event",
            url=healthy["url"], status="succeeded", response_status=200,
            response_body="ok", latency_ms=3.0, outcome="delivered"))
    publish_attempts(settings, attempts)
    dead = dead_task(tenant, failing["id"])
    dead = dead.model_copy(update={"event": events[0]})
    publish_dead(settings, [dead])
    return Seeded(failing, healthy, events, dead)


@pytest.fixture(scope="module")
def data(api: TestClient, eventlog_settings: Settings) -> dict[str, Seeded]:
    seeded = {"acme": seed(api, eventlog_settings, "acme", "key-acme", "acme-marker"),
              "globex": seed(api, eventlog_settings, "globex", "key-globex", "globex-marker")}
    for tenant, key in (("acme", "key-acme"), ("globex", "key-globex")):
        headers = {"Authorization": f"Bearer {key}"}
        mine = seeded[tenant]

        def visible(headers: dict[str, str] = headers, mine: Seeded = mine) -> bool:
            attempts = api.get(f"/v1/endpoints/{mine.failing['id']}/attempts", headers=headers)
            dead = api.get("/v1/dlq", headers=headers)
            events = api.get(f"/v1/events/{mine.events[-1].id}", headers=headers)
            return (len(attempts.json()["data"]) == 3 and len(dead.json()["data"]) == 1
                    and events.status_code == 200)
        eventually(visible)
    return seeded


@pytest.fixture
def acme(api: TestClient, data: dict[str, Seeded]) -> Iterator[Browser]:
    browser = Browser(api)
    assert browser.sign_in("key-acme").status_code == 303
    yield browser


def test_sign_in_sets_a_strict_http_only_cookie_without_the_key(api: TestClient) -> None:
    browser = Browser(api)
    form = browser.client.get("/dashboard/sign-in")
    assert form.status_code == 200
    assert '<meta name="viewport"' in form.text
    assert "HttpOnly" in form.headers["set-cookie"]  # the sign-in form's own token
    response = browser.sign_in("key-acme")
    assert response.status_code == 303
    assert response.headers["location"] == "/dashboard/endpoints"
    cookie = [c for c in response.headers.get_list("set-cookie")
              if c.startswith("webhooks_dashboard=")][0]
    flags = [part.strip().lower() for part in cookie.split(";")]
    assert "httponly" in flags and "samesite=strict" in flags and "path=/dashboard" in flags
    assert "key-acme" not in cookie
    assert "default-src 'self'" in response.headers["content-security-policy"]


def test_a_bad_key_gets_the_form_again_and_no_session(api: TestClient) -> None:
    browser = Browser(api)
    response = browser.sign_in("key-nobody")
    assert response.status_code == 401
    assert "not valid" in response.text and "key-nobody" not in response.text
    assert "webhooks_dashboard=" not in response.headers.get("set-cookie", "")
    assert browser.client.get("/dashboard/endpoints").status_code == 303


def test_sign_in_without_the_form_token_is_refused(api: TestClient) -> None:
    browser = Browser(api)
    response = browser.client.post("/dashboard/sign-in", data={"api_key": "key-acme"})
    assert response.status_code == 403
    assert browser.client.get("/dashboard/endpoints").status_code == 303


def test_pages_need_a_session_and_a_forged_cookie_is_none(api: TestClient) -> None:
    browser = Browser(api)
    for path in ("/dashboard/endpoints", "/dashboard/events", "/dashboard/dlq",
                 "/dashboard/charts", "/dashboard", "/dashboard/endpoints/new"):
        response = browser.client.get(path)
        assert response.status_code == 303
        assert response.headers["location"] == "/dashboard/sign-in"
    browser.client.cookies.set("webhooks_dashboard", "eyJ0IjoiYWNtZSJ9.AAAA", path="/dashboard")
    assert browser.client.get("/dashboard/endpoints").status_code == 303


def test_an_admin_key_names_the_tenant(api: TestClient, data: dict[str, Seeded]) -> None:
    browser = Browser(api)
    assert browser.sign_in("key-admin").status_code == 401
    assert browser.sign_in("key-admin", tenant="globex").status_code == 303
    html = browser.page("/dashboard/endpoints").text
    assert data["globex"].failing["id"] in html and data["acme"].failing["id"] not in html


def test_every_page_renders(acme: Browser, data: dict[str, Seeded]) -> None:
    mine = data["acme"]
    endpoints = acme.page("/dashboard/endpoints").text
    assert mine.failing["url"] in endpoints and mine.healthy["url"] in endpoints
    assert "0.0 %" in endpoints and "100.0 %" in endpoints  # success rates
    assert RECEIVER_ANSWER in endpoints  # last failure with the receiver's answer
    # failing endpoints first
    assert endpoints.index(mine.failing["id"]) < endpoints.index(mine.healthy["id"])

    failed = acme.page(f"/dashboard/endpoints/{mine.failing['id']}", status="failed").text
    assert failed.count("http_status") >= 3 and RECEIVER_ANSWER in failed
    assert acme.page(f"/dashboard/endpoints/{mine.failing['id']}",
                     status="succeeded").text.count("badge ok") == 1  # only "enabled"

    events = acme.page("/dashboard/events").text
    assert all(event.id in events for event in mine.events)
    by_type = acme.page("/dashboard/events", q="order.*").text
    assert mine.events[0].id in by_type
    assert "No events" in acme.page("/dashboard/events", q="invoice.paid").text
    found = acme.client.get("/dashboard/events", params={"q": mine.events[1].id})
    assert found.status_code == 303
    assert found.headers["location"] == f"/dashboard/events/{mine.events[1].id}"

    event = acme.page(f"/dashboard/events/{mine.events[0].id}").text
    assert mine.failing["id"] in event and mine.healthy["id"] in event and "Redeliver" in event

    dlq = acme.page("/dashboard/dlq").text
    assert mine.dead.task_id in dlq and "retries exhausted" in dlq
    assert mine.dead.task_id in acme.page("/dashboard/dlq", endpoint_id=mine.failing["id"]).text

    charts = acme.page("/dashboard/charts").text
    assert charts.count("<svg") == 2
    css = acme.page("/dashboard/static/dashboard.css")
    assert css.headers["content-type"].startswith("text/css")
    assert acme.client.get("/dashboard/static/../app.py").status_code == 404


def test_pages_load_nothing_from_elsewhere(acme: Browser, data: dict[str, Seeded]) -> None:
    for path in ("/dashboard/endpoints", "/dashboard/events", "/dashboard/dlq",
                 "/dashboard/charts"):
        html = acme.page(path).text
        assert not re.search(r'(src|href)="(https?:)?//', html), path


def test_changes_without_the_csrf_token_are_refused_and_change_nothing(
        api: TestClient, acme: Browser, data: dict[str, Seeded]) -> None:
    endpoint_id = data["acme"].healthy["id"]
    before = api.get(f"/v1/endpoints/{endpoint_id}/secret", headers=ACME).json()
    endpoints_before = api.get("/v1/endpoints", headers=ACME).json()
    fields = {"id": data["acme"].dead.task_id, "url": "https://hooks.example.com/csrf",
              "events": "*", "description": "forged"}
    for path in (f"/dashboard/endpoints/{endpoint_id}/disable",
                 f"/dashboard/endpoints/{endpoint_id}/rotate-secret",
                 f"/dashboard/endpoints/{endpoint_id}/test",
                 "/dashboard/endpoints/new",
                 f"/dashboard/endpoints/{endpoint_id}/edit",
                 f"/dashboard/endpoints/{endpoint_id}/delete",
                 f"/dashboard/events/{data['acme'].events[0].id}/redeliver",
                 "/dashboard/dlq/replay", "/dashboard/sign-out"):
        for token in (None, "", "forged-token"):
            response = acme.post(path, fields, csrf=token)
            assert response.status_code == 403, (path, token, response.text)
            assert response.json()["code"] == "csrf_failed"
    assert api.get(f"/v1/endpoints/{endpoint_id}", headers=ACME).json()["disabled"] is False
    assert api.get(f"/v1/endpoints/{endpoint_id}/secret", headers=ACME).json() == before
    assert api.get("/v1/endpoints", headers=ACME).json() == endpoints_before
    acme.page("/dashboard/endpoints")  # still signed in


def test_a_token_of_another_session_is_refused(api: TestClient, acme: Browser,
                                               data: dict[str, Seeded]) -> None:
    other = Browser(api)
    other.sign_in("key-acme")
    endpoint_id = data["acme"].healthy["id"]
    response = acme.post(f"/dashboard/endpoints/{endpoint_id}/disable", csrf=other.csrf())
    assert response.status_code == 403


def test_actions_go_through_the_api(api: TestClient, acme: Browser,
                                    data: dict[str, Seeded]) -> None:
    endpoint_id = data["acme"].healthy["id"]
    response = acme.post(f"/dashboard/endpoints/{endpoint_id}/disable")
    assert response.status_code == 303
    assert api.get(f"/v1/endpoints/{endpoint_id}", headers=ACME).json()["disabled"] is True
    assert "disabled" in acme.page(f"/dashboard/endpoints/{endpoint_id}").text
    assert acme.post(f"/dashboard/endpoints/{endpoint_id}/enable").status_code == 303
    assert api.get(f"/v1/endpoints/{endpoint_id}", headers=ACME).json()["disabled"] is False

    rotated = acme.post(f"/dashboard/endpoints/{endpoint_id}/rotate-secret")
    assert rotated.status_code == 200
    shown = re.search(r'data-testid="new-secret">([^<]+)<', rotated.text)
    secrets = api.get(f"/v1/endpoints/{endpoint_id}/secret", headers=ACME).json()["secrets"]
    assert shown and secrets[0]["secret"] == shown.group(1) and len(secrets) == 2
    assert rotated.headers["cache-control"] == "no-store"

    assert acme.post(f"/dashboard/endpoints/{endpoint_id}/test").headers[
        "location"].endswith("done=tested")
    redelivered = acme.post(f"/dashboard/events/{data['acme'].events[0].id}/redeliver",
                            {"endpoint_id": endpoint_id})
    assert redelivered.status_code == 303 and "n=1" in redelivered.headers["location"]

    dead = data["acme"].dead
    one = acme.client.post(f"/dashboard/dlq/replay?only={dead.task_id}",
                           data={"csrf_token": acme.csrf(), "id": "ignored"})
    assert one.status_code == 303 and "done=replayed" in one.headers["location"], one.text
    selected = acme.post("/dashboard/dlq/replay", {"id": [dead.task_id]})
    assert "n=1" in selected.headers["location"]
    by_filter = acme.post("/dashboard/dlq/replay", {"scope": "filter",
                                                    "endpoint_id": dead.endpoint_id})
    assert "n=1" in by_filter.headers["location"]
    nothing = acme.post("/dashboard/dlq/replay", {})
    assert nothing.status_code == 400 and "tick at least one" in nothing.text


def test_another_tenant_sees_none_of_it(api: TestClient, data: dict[str, Seeded]) -> None:
    globex = Browser(api)
    assert globex.sign_in("key-globex").status_code == 303
    acme_data = data["acme"]
    secrets_of_acme = [acme_data.failing["id"], acme_data.healthy["id"], "acme-marker",
                       acme_data.dead.task_id, *(e.id for e in acme_data.events)]
    pages = [globex.page(path).text for path in (
        "/dashboard/endpoints", "/dashboard/events", "/dashboard/dlq", "/dashboard/charts")]
    pages.append(globex.page("/dashboard/events", q="order.*").text)
    pages.append(globex.page(f"/dashboard/endpoints/{data['globex'].failing['id']}").text)
    for html in pages:
        for secret in secrets_of_acme:
            assert secret not in html
    assert data["globex"].failing["id"] in pages[0]  # its own endpoints do show
    # Reaching for acme's things by id: not found, and nothing changes.
    assert globex.client.get(f"/dashboard/endpoints/{acme_data.failing['id']}").status_code == 404
    assert globex.client.get(f"/dashboard/events/{acme_data.events[0].id}").status_code == 404
    assert globex.post(f"/dashboard/endpoints/{acme_data.healthy['id']}/disable"
                       ).status_code == 404
    assert api.get(f"/v1/endpoints/{acme_data.healthy['id']}",
                   headers=ACME).json()["disabled"] is False
    replay = globex.post("/dashboard/dlq/replay", {"id": [acme_data.dead.task_id]})
    assert replay.status_code == 404
    acme_endpoint = f"/dashboard/endpoints/{acme_data.healthy['id']}"
    before = api.get(f"/v1/endpoints/{acme_data.healthy['id']}", headers=ACME).json()
    for path in (f"{acme_endpoint}/edit", f"{acme_endpoint}/delete"):
        assert globex.client.get(path).status_code == 404
        response = globex.post(path, {"url": "https://hooks.example.com/taken", "events": "*"})
        assert response.status_code == 404, (path, response.text)
        assert acme_data.healthy["url"] not in response.text
    assert api.get(f"/v1/endpoints/{acme_data.healthy['id']}", headers=ACME).json() == before


def test_sign_out_ends_the_session(api: TestClient, data: dict[str, Seeded]) -> None:
    browser = Browser(api)
    browser.sign_in("key-acme")
    response = browser.post("/dashboard/sign-out")
    assert response.status_code == 303
    assert browser.client.get("/dashboard/endpoints").status_code == 303


def endpoint_form(url: str = "https://hooks.example.com/dashboard", events: str = "order.*",
                  description: str = "", rate_limit: str = "") -> dict[str, str]:
    return {"url": url, "events": events, "description": description,
            "rate_limit": rate_limit}


def alert(html: str) -> str:
    found = re.search(r'<p class="error" role="alert">([^<]*)</p>', html)
    assert found, "no error shown"
    return unescape(found.group(1))


def test_an_endpoint_is_created_edited_and_deleted_through_forms(
        api: TestClient, acme: Browser) -> None:
    form = acme.page("/dashboard/endpoints/new").text
    assert 'name="url"' in form and 'name="rate_limit"' in form and "New endpoint" in form

    created = acme.post("/dashboard/endpoints/new", endpoint_form(
        url="https://hooks.example.com/from-the-form", events="order.created, invoice.*",
        description="made in the dashboard", rate_limit="7"))
    assert created.status_code == 200, created.text
    assert created.headers["cache-control"] == "no-store"
    assert "Endpoint created" in created.text
    found = re.search(r'href="/dashboard/endpoints/(ep_[0-9A-Za-z]+)"', created.text)
    shown = re.search(r'data-testid="new-secret">([^<]+)<', created.text)
    assert found and shown
    endpoint_id = found.group(1)
    [secret] = api.get(f"/v1/endpoints/{endpoint_id}/secret", headers=ACME).json()["secrets"]
    assert secret["secret"] == shown.group(1)  # the secret it signs with, shown this once
    endpoint = api.get(f"/v1/endpoints/{endpoint_id}", headers=ACME).json()
    assert endpoint["url"] == "https://hooks.example.com/from-the-form"
    assert endpoint["events"] == ["order.created", "invoice.*"]
    assert endpoint["description"] == "made in the dashboard"
    assert endpoint["rate_limit"] == 7 and endpoint["disabled"] is False
    assert shown.group(1) not in acme.page(f"/dashboard/endpoints/{endpoint_id}").text
    assert endpoint_id in acme.page("/dashboard/endpoints").text

    edit = acme.page(f"/dashboard/endpoints/{endpoint_id}/edit").text
    assert 'value="order.created, invoice.*"' in edit and 'value="7"' in edit
    assert 'value="made in the dashboard"' in edit
    saved = acme.post(f"/dashboard/endpoints/{endpoint_id}/edit", endpoint_form(
        url="https://hooks.example.com/moved", events="order.*", description="",
        rate_limit=""))
    assert saved.status_code == 303, saved.text
    assert saved.headers["location"] == f"/dashboard/endpoints/{endpoint_id}?done=updated"
    changed = api.get(f"/v1/endpoints/{endpoint_id}", headers=ACME).json()
    assert changed["url"] == "https://hooks.example.com/moved"
    assert changed["events"] == ["order.*"]
    assert changed["description"] == "" and changed["rate_limit"] is None
    assert "Endpoint saved." in acme.page(f"/dashboard/endpoints/{endpoint_id}",
                                          done="updated").text
    # The same values again: nothing is written.
    again = acme.post(f"/dashboard/endpoints/{endpoint_id}/edit", endpoint_form(
        url="https://hooks.example.com/moved", events="order.*"))
    assert again.headers["location"].endswith("done=unchanged")
    assert api.get(f"/v1/endpoints/{endpoint_id}", headers=ACME).json() == changed
    # An edit keeps the secret.
    assert api.get(f"/v1/endpoints/{endpoint_id}/secret",
                   headers=ACME).json()["secrets"] == [secret]

    confirm = acme.page(f"/dashboard/endpoints/{endpoint_id}/delete").text
    assert "Delete this endpoint?" in confirm and "https://hooks.example.com/moved" in confirm
    assert api.get(f"/v1/endpoints/{endpoint_id}", headers=ACME).status_code == 200  # asked
    deleted = acme.post(f"/dashboard/endpoints/{endpoint_id}/delete")
    assert deleted.status_code == 303
    assert deleted.headers["location"] == "/dashboard/endpoints?done=deleted"
    assert api.get(f"/v1/endpoints/{endpoint_id}", headers=ACME).status_code == 404
    listed = acme.page("/dashboard/endpoints", done="deleted").text
    assert "Endpoint deleted" in listed and endpoint_id not in listed
    assert acme.client.get(f"/dashboard/endpoints/{endpoint_id}/edit").status_code == 404
    assert acme.post(f"/dashboard/endpoints/{endpoint_id}/delete").status_code == 404


def rewrite(settings: Settings, endpoint_id: str, change: Callable[[Endpoint], Endpoint]
            ) -> None:
    """Write the endpoint's latest record changed, as another writer (the fanout) would."""
    topic = Topics.from_settings(settings).endpoints
    latest = [m for m in read_topic(settings, topic, idle=1.0) if m.key() == endpoint_id.encode()]
    record = change(Endpoint.from_json(latest[-1].value()))
    AckedProducer(settings.kafka).send(topic, record.to_json(), key=endpoint_id.encode())


def test_ordered_pause_and_verification_on_the_endpoint_page(
        api: TestClient, acme: Browser, eventlog_settings: Settings) -> None:
    url = "https://hooks.example.com/verify-me"
    created = acme.post("/dashboard/endpoints/new",
                        {**endpoint_form(url=url), "ordered": "on", "verify": "on"})
    found = re.search(r'href="/dashboard/endpoints/(ep_[0-9A-Za-z]+)"', created.text)
    assert created.status_code == 200 and found, created.text
    endpoint_id, path = found.group(1), f"/dashboard/endpoints/{found.group(1)}"
    endpoint = api.get(f"/v1/endpoints/{endpoint_id}", headers=ACME).json()
    assert endpoint["ordered"] is True and endpoint["verification"]["state"] == "pending"
    page = acme.page(path).text
    assert 'data-testid="ordered">yes' in page and "Verify again" in page
    assert re.search(r'data-testid="verification"><span class="badge note">pending', page)

    # No fanout runs here: the challenge stays unanswered; "verify again" sends a new one.
    again = acme.post(f"{path}/verify")
    assert again.headers["location"] == f"{path}?done=verifying"
    renewed = api.get(f"/v1/endpoints/{endpoint_id}", headers=ACME).json()["verification"]
    assert renewed["requested_at"] > endpoint["verification"]["requested_at"]
    # A failed verification, as the fanout writes it, shows its reason.
    rewrite(eventlog_settings, endpoint_id, lambda e: e.model_copy(update={
        "verification": settled(e.verification, e.updated, "challenge_not_echoed",
                                "the receiver answered HTTP 200 without echoing it")}))
    eventually(lambda: "challenge_not_echoed: the receiver answered HTTP 200 without echoing it"
               in acme.page(path).text)

    # Paused: shown with its time and a Resume button; near retention, the API's warning.
    assert acme.post(f"{path}/pause").headers["location"] == f"{path}?done=paused"
    page = acme.page(path).text
    assert 'data-testid="paused">paused</span> since' in page and ">Resume</button>" in page
    assert 'data-testid="warning"' not in page
    rewrite(eventlog_settings, endpoint_id, lambda e: e.model_copy(update={
        "paused_since": e.paused_since - timedelta(days=eventlog_settings.retention_days - 1)}))
    eventually(lambda: "resume it before" in acme.page(path).text)
    assert acme.post(f"{path}/resume").headers["location"] == f"{path}?done=resumed"
    assert api.get(f"/v1/endpoints/{endpoint_id}", headers=ACME).json()["paused"] is False
    assert ">Pause</button>" in acme.page(path).text

    # Ordered is a box of the edit form: unticked, the endpoint is unordered.
    assert 'name="ordered" value="on" checked' in acme.page(f"{path}/edit").text
    saved = acme.post(f"{path}/edit", endpoint_form(url=url))
    assert saved.headers["location"] == f"{path}?done=updated"
    assert api.get(f"/v1/endpoints/{endpoint_id}", headers=ACME).json()["ordered"] is False
    assert 'data-testid="ordered">no' in acme.page(path).text
    acme.post(f"{path}/delete")


INVALID = [  # (field, typed value, what the error says)
    ("url", "ftp://hooks.example.com/in", "url scheme must be http or https"),
    ("url", "https://user:pw@hooks.example.com/in", "must not contain credentials"),
    ("url", "http://10.0.0.7/hooks", "target address 10.0.0.7 is not public"),
    ("url", "http://169.254.169.254/latest", "is not public"),
    ("url", "", "URL: String should have at least 1 character"),
    ("events", "", "Event types: List should have at least 1 item"),
    ("events", "Order Created", "invalid event type filters"),
    ("rate_limit", "0", "Rate limit: Input should be greater than or equal to 1"),
    ("rate_limit", "fast", "Rate limit: Input should be a valid integer"),
    ("rate_limit", "1.5", "Rate limit: Input should be a valid integer"),
    ("description", "x" * 513, "Description: String should have at most 512 characters"),
    ("filter", "{nope", "Payload filter: not JSON"),
    ("filter", "[1, 2]", "Payload filter: must be a JSON object"),
    ("filter", '{"$where": "1"}', "Payload filter: filter: unknown operator $where"),
    ("filter", '{"data.note": {"$regex": "(open"}}',
     "Payload filter: data.note.$regex: not a valid RE2 pattern"),
    ("header_name_0", "Host", "Custom headers: header 'Host': reserved"),
    ("header_name_0", "bad name", "Custom headers: header 'bad name': not a valid HTTP header"),
    ("header_value_0", "orphan", "Custom headers: row 1 has a value but no name"),
]


@pytest.mark.parametrize(("name", "value", "complaint"), INVALID,
                         ids=[f"{n}={v[:24]}" for n, v, _ in INVALID])
def test_invalid_input_shows_the_form_again_and_changes_nothing(
        api: TestClient, acme: Browser, data: dict[str, Seeded],
        name: str, value: str, complaint: str) -> None:
    before = api.get("/v1/endpoints", headers=ACME).json()
    typed = {**endpoint_form(description="typed before the mistake"), name: value}
    if name == "description":
        typed["url"] = "https://hooks.example.com/typed-before"
    created = acme.post("/dashboard/endpoints/new", typed)
    assert created.status_code == 422, created.text
    assert complaint in alert(created.text)
    assert "typed before the mistake" in created.text or "typed-before" in created.text
    assert 'name="csrf_token"' in created.text and "new-secret" not in created.text

    endpoint_id = data["acme"].healthy["id"]
    edited = acme.post(f"/dashboard/endpoints/{endpoint_id}/edit", typed)
    assert edited.status_code == 422, edited.text
    assert complaint in alert(edited.text)
    assert api.get("/v1/endpoints", headers=ACME).json() == before


def header_rows(*rows: tuple[str, str, bool], stored: dict[int, str] | None = None
                ) -> dict[str, str]:
    """The form fields of custom-header rows (name, value, secret), in order."""
    fields = {}
    for i, (name, value, secret) in enumerate(rows):
        fields |= {f"header_name_{i}": name, f"header_value_{i}": value}
        if secret:
            fields[f"header_secret_{i}"] = "on"
    for i, name in (stored or {}).items():
        fields[f"header_stored_{i}"] = name
    return fields


def stored_headers(api: TestClient, endpoint_id: str) -> list[tuple[str, str, bool]]:
    """The headers as the record keeps them, secret values (stored sealed) opened: what
    the fanout sends."""
    store = api.app.state.context.endpoints
    endpoint = store.get("acme", endpoint_id)
    assert all(h.value.startswith("whenc_v1.") for h in endpoint.headers if h.secret)
    return [(h.name, h.value, h.secret)
            for h in endpoint.with_headers_opened(store.keyring).headers]


def test_custom_headers_and_a_payload_filter_through_the_forms(
        api: TestClient, acme: Browser) -> None:
    form = acme.page("/dashboard/endpoints/new").text
    assert 'name="header_name_2"' in form and 'name="header_name_3"' not in form
    assert '<textarea name="filter"' in form
    shipped = {"data.object.status": "shipped", "data.object.amount": {"$gte": 1000}}
    created = acme.post("/dashboard/endpoints/new", {
        **endpoint_form(url="https://hooks.example.com/options"),
        **header_rows(("X-Team", "payments", False), ("Authorization", "Bearer s3cr3t", True)),
        "filter": json.dumps(shipped)})
    assert created.status_code == 200, created.text
    endpoint_id = re.search(r'href="/dashboard/endpoints/(ep_[0-9A-Za-z]+)"',
                            created.text).group(1)
    shown = api.get(f"/v1/endpoints/{endpoint_id}", headers=ACME).json()
    assert shown["headers"] == [
        {"name": "X-Team", "value": "payments", "secret": False},
        {"name": "Authorization", "value": "[masked]", "secret": True}]
    assert shown["filter"] == shipped

    page = acme.page(f"/dashboard/endpoints/{endpoint_id}").text
    assert "X-Team: payments" in page and "Authorization: [masked]" in page
    assert '"data.object.status": "shipped"' in unescape(page)
    edit = acme.page(f"/dashboard/endpoints/{endpoint_id}/edit").text
    assert "s3cr3t" not in page and "s3cr3t" not in edit  # never put in a page
    assert 'name="header_value_0" value="payments"' in edit
    assert 'name="header_value_1" value=""' in edit and 'name="header_stored_1"' in edit
    assert 'name="header_name_4"' in edit  # three empty rows below the two stored

    def save(*rows: tuple[str, str, bool], stored: dict[int, str] | None = None,
             **fields: str) -> httpx.Response:
        saved = acme.post(f"/dashboard/endpoints/{endpoint_id}/edit", {
            **endpoint_form(url="https://hooks.example.com/options"),
            "filter": json.dumps(shipped), **header_rows(*rows, stored=stored), **fields})
        assert saved.status_code == 303, saved.text
        return saved

    # The form as shown, posted back: the secret row left empty keeps its value.
    again = save(("X-Team", "payments", False), ("Authorization", "", True),
                 stored={1: "Authorization"})
    assert again.headers["location"].endswith("done=unchanged")
    # Another field changed: only it is sent, the secret stays.
    save(("X-Team", "payments", False), ("Authorization", "", True),
         stored={1: "Authorization"}, description="with options")
    assert stored_headers(api, endpoint_id) == [("X-Team", "payments", False),
                                                ("Authorization", "Bearer s3cr3t", True)]
    # Renamed and added to; a typed secret replaces the stored one.
    save(("X-Team", "ops", False), ("X-Auth", "", True), ("X-Key", "k-1", True),
         stored={1: "Authorization"}, description="with options")
    assert stored_headers(api, endpoint_id) == [
        ("X-Team", "ops", False), ("X-Auth", "Bearer s3cr3t", True), ("X-Key", "k-1", True)]
    save(("X-Team", "ops", False), ("X-Auth", "Bearer n3w", True), ("X-Key", "", True),
         stored={1: "X-Auth", 2: "X-Key"}, description="with options")
    assert stored_headers(api, endpoint_id) == [
        ("X-Team", "ops", False), ("X-Auth", "Bearer n3w", True), ("X-Key", "k-1", True)]
    # Unticking "secret" without a value never reveals the stored one; a cleared name
    # removes its row's header; an empty filter removes the filter.
    save(("X-Auth", "", False), stored={0: "X-Auth"}, description="with options", filter="")
    assert stored_headers(api, endpoint_id) == [("X-Auth", "", False)]
    assert api.get(f"/v1/endpoints/{endpoint_id}", headers=ACME).json()["filter"] is None
    assert "Payload filter</dt><dd>none" in acme.page(f"/dashboard/endpoints/{endpoint_id}").text

    # A mistake on the edit form changes nothing and shows no stored secret.
    save(("X-Key", "k-2", True), description="with options")
    refused = acme.post(f"/dashboard/endpoints/{endpoint_id}/edit", {
        **endpoint_form(url="https://hooks.example.com/options"),
        **header_rows(("X-Key", "", True), ("Host", "evil", False), stored={0: "X-Key"})})
    assert refused.status_code == 422 and "'Host': reserved" in alert(refused.text)
    assert "k-2" not in refused.text and 'name="header_stored_0" value="X-Key"' in refused.text
    assert stored_headers(api, endpoint_id) == [("X-Key", "k-2", True)]
    acme.post(f"/dashboard/endpoints/{endpoint_id}/delete")


def test_the_endpoints_page_pages_and_filters(api: TestClient,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    tenant = f"t{int(time.time() * 1000)}"
    made = []
    for path in ("shop-1", "blog", "shop-2"):
        response = api.post("/v1/endpoints", params={"tenant": tenant}, headers=ADMIN,
                            json={"url": f"https://hooks.example.com/{path}", "events": ["*"]})
        made.append(response.json()["id"])
    api.patch(f"/v1/endpoints/{made[2]}", params={"tenant": tenant}, headers=ADMIN,
              json={"disabled": True})
    browser = Browser(api)
    assert browser.sign_in("key-admin", tenant=tenant).status_code == 303
    monkeypatch.setattr(pages, "PAGE_SIZE", 2)

    first = browser.page("/dashboard/endpoints").text
    assert made[0] in first and made[1] in first and made[2] not in first
    cursor = unescape(re.search(r'href="/dashboard/endpoints\?cursor=([^"]+)">Next page',
                                first).group(1))
    second = browser.page("/dashboard/endpoints", cursor=urllib.parse.unquote(cursor)).text
    assert made[2] in second and made[0] not in second and "Next page" not in second

    shops = browser.page("/dashboard/endpoints", url="SHOP").text
    assert made[0] in shops and made[2] in shops and made[1] not in shops
    disabled = browser.page("/dashboard/endpoints", state="disabled").text
    assert made[2] in disabled and made[0] not in disabled
    assert '<option value="disabled" selected>' in disabled
    nothing = browser.page("/dashboard/endpoints", url="nowhere").text
    assert "No endpoints match this filter." in nothing
    forged = browser.client.get("/dashboard/endpoints", params={"cursor": "forged.cursor"})
    assert forged.status_code == 400 and "cursor" in alert(forged.text)


# -- managed keys, scopes, sign-in links -------------------------------------------------

CHANGES = ("disable", "enable", "rotate-secret", "test", "edit", "delete")


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def registered_tenant(api: TestClient, tenant: str) -> dict[str, Any]:
    """A tenant of the registry with one endpoint (made by an admin acting for it)."""
    response = api.post("/v1/tenants", json={"id": tenant}, headers=ADMIN)
    assert response.status_code == 201, response.text
    endpoint = api.post("/v1/endpoints", params={"tenant": tenant}, headers=ADMIN, json={
        "url": f"https://hooks.example.com/{tenant}", "events": ["order.*"],
        "description": f"{tenant} orders"})
    assert endpoint.status_code == 201, endpoint.text
    return endpoint.json()


def managed_key(api: TestClient, tenant: str, **fields: Any) -> dict[str, Any]:
    response = api.post(f"/v1/tenants/{tenant}/keys", json=fields, headers=ADMIN)
    assert response.status_code == 201, response.text
    return response.json()


def mint(api: TestClient, tenant: str, **fields: Any) -> dict[str, Any]:
    response = api.post(f"/v1/tenants/{tenant}/dashboard-links", json=fields, headers=ADMIN)
    assert response.status_code == 201, response.text
    return response.json()


def signed_document(value: str) -> dict[str, Any]:
    """What a session cookie or link token says (its payload; the MAC is not checked)."""
    body = value.strip('"').split(".")[0]
    document: dict[str, Any] = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    return document


def set_cookie(response: httpx.Response, name: str = "webhooks_dashboard") -> str | None:
    found = [c for c in response.headers.get_list("set-cookie") if c.startswith(f"{name}=")]
    return found[0] if found else None


def max_age(cookie: str) -> int:
    found = re.search(r"Max-Age=(\d+)", cookie, re.IGNORECASE)
    assert found, cookie
    return int(found.group(1))


def ended(browser: Browser, cookie: str | None = None) -> bool:
    """True once the browser's session (or the session ``cookie``, sent as it is even
    after the browser would have dropped it) no longer opens pages: the server sends it
    to sign in again."""
    if cookie is None:
        response = browser.client.get("/dashboard/endpoints")
    else:
        response = Browser(browser.client).client.get(
            "/dashboard/endpoints", headers={"Cookie": f"webhooks_dashboard={cookie}"})
    return (response.status_code == 303
            and response.headers["location"] == "/dashboard/sign-in?done=session_ended")


def test_a_managed_key_signs_in_and_revoking_it_ends_the_session(api: TestClient) -> None:
    endpoint = registered_tenant(api, "dash-managed")
    created = managed_key(api, "dash-managed", description="dashboard")
    browser = Browser(api)
    response = browser.sign_in(created["key"])
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/dashboard/endpoints"
    cookie = browser.session_cookie()
    assert cookie and created["key"] not in cookie and created["key"][4:] not in cookie
    assert signed_document(cookie)["k"] == created["id"]  # named by its id, never the key
    page = browser.page("/dashboard/endpoints").text
    assert endpoint["id"] in page and "dash-managed" in page
    assert 'data-testid="read-only"' not in page and "New endpoint" in page
    changed = browser.post(f"/dashboard/endpoints/{endpoint['id']}/disable")
    assert changed.status_code == 303, changed.text
    assert api.get(f"/v1/endpoints/{endpoint['id']}", params={"tenant": "dash-managed"},
                   headers=ADMIN).json()["disabled"] is True
    csrf = browser.csrf()

    revoked = api.delete(f"/v1/tenants/dash-managed/keys/{created['id']}", headers=ADMIN)
    assert revoked.status_code == 204
    assert ended(browser)  # at its very next request
    notice = browser.client.get("/dashboard/sign-in?done=session_ended").text
    assert "Your session ended" in notice
    # A change posted with the session's old token does nothing.
    again = browser.client.post(f"/dashboard/endpoints/{endpoint['id']}/enable",
                                data={"csrf_token": csrf})
    assert again.status_code == 303 and "sign-in" in again.headers["location"]
    assert api.get(f"/v1/endpoints/{endpoint['id']}", params={"tenant": "dash-managed"},
                   headers=ADMIN).json()["disabled"] is True
    # The revoked key cannot sign in again.
    refused = Browser(api).sign_in(created["key"])
    assert refused.status_code == 401 and "not valid" in refused.text


def test_a_session_ends_when_its_managed_key_expires(api: TestClient) -> None:
    registered_tenant(api, "dash-expiring")
    created = managed_key(api, "dash-expiring", expires_in=2)
    browser = Browser(api)
    response = browser.sign_in(created["key"])
    assert response.status_code == 303
    cookie = set_cookie(response)
    assert cookie and max_age(cookie) <= 2  # the cookie goes with the key
    value = browser.session_cookie()
    browser.page("/dashboard/endpoints")
    deadline = time.monotonic() + 6
    while not ended(browser, value):
        assert time.monotonic() < deadline, "the session outlived its key"
        time.sleep(0.2)


def test_a_read_only_key_sees_the_pages_but_changes_nothing(api: TestClient) -> None:
    endpoint = registered_tenant(api, "dash-reader")
    reader = managed_key(api, "dash-reader", scopes=["read"])
    before = api.get(f"/v1/endpoints/{endpoint['id']}", params={"tenant": "dash-reader"},
                     headers=ADMIN).json()
    browser = Browser(api)
    assert browser.sign_in(reader["key"]).status_code == 303
    for path in ("/dashboard/endpoints", f"/dashboard/endpoints/{endpoint['id']}",
                 "/dashboard/events", "/dashboard/dlq", "/dashboard/charts"):
        html = browser.page(path).text
        assert 'data-testid="read-only"' in html, path
        # No change buttons: the only form with a CSRF token is signing out.
        assert html.count('name="csrf_token"') == 1, path
    html = browser.page("/dashboard/endpoints").text
    assert endpoint["id"] in html and "New endpoint" not in html and "Disable" not in html

    base = f"/dashboard/endpoints/{endpoint['id']}"
    for path in (*(f"{base}/{action}" for action in CHANGES), "/dashboard/endpoints/new",
                 "/dashboard/dlq/replay"):
        response = browser.post(path, {"url": "https://hooks.example.com/taken",
                                       "events": "*", "id": "dlq_x"})
        assert response.status_code == 403, (path, response.text[:300])
        assert response.headers["content-type"].startswith("text/html")
        assert "'manage' scope" in unescape(response.text), path
        assert "Read-only session" in response.text
    for path in ("/dashboard/endpoints/new", f"{base}/edit", f"{base}/delete"):
        response = browser.client.get(path)
        assert response.status_code == 403 and "'manage' scope" in unescape(response.text), path
    assert api.get(f"/v1/endpoints/{endpoint['id']}", params={"tenant": "dash-reader"},
                   headers=ADMIN).json() == before
    assert len(api.get("/v1/endpoints", params={"tenant": "dash-reader"},
                       headers=ADMIN).json()["data"]) == 1
    # Signing out needs no manage scope.
    assert browser.post("/dashboard/sign-out").headers["location"].endswith("signed_out")


def test_a_key_without_the_read_scope_cannot_sign_in(api: TestClient) -> None:
    api.post("/v1/tenants", json={"id": "dash-publisher"}, headers=ADMIN)
    publisher = managed_key(api, "dash-publisher", scopes=["publish"])
    browser = Browser(api)
    response = browser.sign_in(publisher["key"])
    assert response.status_code == 401
    assert "lacks the 'read' scope" in unescape(response.text)
    assert publisher["key"] not in response.text and set_cookie(response) is None
    assert browser.client.get("/dashboard/endpoints").status_code == 303


def test_a_managed_admin_key_signs_in_for_a_tenant(api: TestClient, data: dict[str, Seeded]
                                                    ) -> None:
    admin = managed_key(api, "*", scopes=["admin"])
    browser = Browser(api)
    assert browser.sign_in(admin["key"]).status_code == 401  # must name a tenant
    assert browser.sign_in(admin["key"], tenant="globex").status_code == 303
    assert data["globex"].failing["id"] in browser.page("/dashboard/endpoints").text


def test_a_sign_in_link_opens_a_session_of_its_tenant(api: TestClient) -> None:
    endpoint = registered_tenant(api, "dash-linked")
    started = time.time()
    link = mint(api, "dash-linked")
    assert link["tenant"] == "dash-linked" and link["scopes"] == ["read", "manage"]
    assert link["path"].startswith("/dashboard/sign-in/link?token=")
    assert link["url"] == "http://testserver" + link["path"]
    expires = datetime.fromisoformat(link["expires"]).timestamp()
    assert started + 3590 < expires <= time.time() + 3600  # an hour by default
    token = httpx.URL(link["url"]).params["token"]
    assert set(signed_document(token)) == {"t", "s", "n", "e"}  # no key in it
    assert "key-" not in token and "whk_" not in token

    browser = Browser(api)
    opened = browser.client.get(link["path"])
    assert opened.status_code == 303, opened.text
    assert opened.headers["location"] == "/dashboard/sign-in/continue"  # token leaves the bar
    assert opened.headers["referrer-policy"] == "no-referrer"
    cookie = set_cookie(opened)
    assert cookie and "httponly" in cookie.lower() and "samesite=strict" in cookie.lower()
    assert max_age(cookie) <= 3600
    assert signed_document(browser.session_cookie() or "")["e"] <= expires
    onward = browser.client.get("/dashboard/sign-in/continue")
    assert onward.status_code == 303 and onward.headers["location"] == "/dashboard/endpoints"
    page = browser.page("/dashboard/endpoints").text
    assert endpoint["id"] in page and "dash-linked" in page and "New endpoint" in page
    # Read and manage: it changes its own endpoints.
    assert browser.post(f"/dashboard/endpoints/{endpoint['id']}/disable").status_code == 303
    assert api.get(f"/v1/endpoints/{endpoint['id']}", params={"tenant": "dash-linked"},
                   headers=ADMIN).json()["disabled"] is True
    # Without the cookie, the continue page moves on by itself (same-site navigation).
    fresh = Browser(api).client.get("/dashboard/sign-in/continue")
    assert fresh.status_code == 200
    assert 'http-equiv="refresh" content="0;url=/dashboard/endpoints"' in fresh.text


def test_a_link_session_ends_no_later_than_its_link(api: TestClient) -> None:
    registered_tenant(api, "dash-short")
    link = mint(api, "dash-short", expires_in=2)
    expires = datetime.fromisoformat(link["expires"]).timestamp()
    browser = Browser(api)
    opened = browser.client.get(link["path"])
    cookie = set_cookie(opened)
    assert cookie and max_age(cookie) <= 2
    value = browser.session_cookie() or ""
    assert signed_document(value)["e"] <= expires
    browser.page("/dashboard/endpoints")
    deadline = time.monotonic() + 6
    while not ended(browser, value):
        assert time.monotonic() < deadline, "the link's session outlived the link"
        time.sleep(0.2)
    # The link itself no longer opens anything.
    refused = Browser(api).client.get(link["path"])
    assert refused.status_code == 401 and "has expired" in refused.text


def test_a_link_session_cannot_act_for_another_tenant(api: TestClient,
                                                      data: dict[str, Seeded]) -> None:
    registered_tenant(api, "dash-isolated")
    browser = Browser(api)
    assert browser.client.get(mint(api, "dash-isolated")["path"]).status_code == 303
    acme_data = data["acme"]
    before = api.get(f"/v1/endpoints/{acme_data.healthy['id']}", headers=ACME).json()
    for path in ("/dashboard/endpoints", "/dashboard/events", "/dashboard/dlq"):
        html = browser.page(path, tenant="acme").text  # a ?tenant= is no such thing here
        for secret in (acme_data.failing["id"], acme_data.healthy["id"], "acme-marker",
                       acme_data.dead.task_id):
            assert secret not in html, (path, secret)
    acme_endpoint = f"/dashboard/endpoints/{acme_data.healthy['id']}"
    assert browser.client.get(acme_endpoint).status_code == 404
    assert browser.client.get(f"/dashboard/events/{acme_data.events[0].id}").status_code == 404
    for action in CHANGES:
        response = browser.post(f"{acme_endpoint}/{action}",
                                {"url": "https://hooks.example.com/taken", "events": "*"})
        assert response.status_code == 404, (action, response.text[:300])
    assert browser.post("/dashboard/dlq/replay",
                        {"id": [acme_data.dead.task_id]}).status_code == 404
    assert api.get(f"/v1/endpoints/{acme_data.healthy['id']}", headers=ACME).json() == before


def forged_links(api: TestClient, settings: Settings) -> dict[str, str]:
    """Tokens that must open nothing: each altered, foreign or not a link at all."""
    genuine = httpx.URL(mint(api, "dash-forged")["url"]).params["token"]
    body, mac = genuine.split(".")
    payload = signed_document(genuine)

    def encoded(document: dict[str, Any]) -> str:
        raw = json.dumps(document, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    other_key = SessionSigner(settings.model_copy(update={"cursor_secret": "someone-else"}))
    session = Browser(api)
    session.sign_in("key-acme")
    return {
        "another tenant": f"{encoded({**payload, 't': 'acme'})}.{mac}",
        "more scopes": f"{encoded({**payload, 's': ['admin', 'manage', 'read']})}.{mac}",
        "later expiry": f"{encoded({**payload, 'e': payload['e'] + 3600})}.{mac}",
        "cut short": genuine[:-5],
        "no signature": body,
        "garbage": "not-a-token",
        "empty": "",
        "signed elsewhere": other_key.issue_link("dash-forged", payload["e"]),
        "a session cookie": session.session_cookie() or "",
        "too long": genuine + "A" * 5000,
    }


def test_forged_or_malformed_links_open_nothing(api: TestClient,
                                                eventlog_settings: Settings) -> None:
    registered_tenant(api, "dash-forged")
    for why, token in forged_links(api, eventlog_settings).items():
        browser = Browser(api)
        response = browser.client.get("/dashboard/sign-in/link", params={"token": token})
        assert response.status_code == 401, (why, response.status_code)
        assert "This sign-in link is not valid" in response.text, why
        assert 'name="api_key"' in response.text  # the sign-in page, to sign in otherwise
        assert set_cookie(response) is None, why
        assert browser.client.get("/dashboard/endpoints").status_code == 303, why
    missing = Browser(api).client.get("/dashboard/sign-in/link")
    assert missing.status_code == 401 and set_cookie(missing) is None


def test_an_erased_tenant_ends_every_session_of_it(api: TestClient) -> None:
    registered_tenant(api, "dash-erased")
    key = managed_key(api, "dash-erased")
    with_key, as_admin, with_link = Browser(api), Browser(api), Browser(api)
    assert with_key.sign_in(key["key"]).status_code == 303
    assert as_admin.sign_in("key-admin", tenant="dash-erased").status_code == 303
    link = mint(api, "dash-erased")
    assert with_link.client.get(link["path"]).status_code == 303
    unused = mint(api, "dash-erased")
    for browser in (with_key, as_admin, with_link):
        assert "dash-erased orders" in browser.page("/dashboard/endpoints").text

    erased = api.delete("/v1/tenants/dash-erased", headers=ADMIN)
    assert erased.status_code == 200, erased.text
    for browser in (with_key, as_admin, with_link):
        assert ended(browser)
    refused = Browser(api).client.get(unused["path"])
    assert refused.status_code == 401 and "no longer exists" in refused.text
    assert set_cookie(refused) is None
    admin_again = Browser(api).sign_in("key-admin", tenant="dash-erased")
    assert admin_again.status_code == 401 and "was erased" in admin_again.text
    assert api.post("/v1/tenants/dash-erased/dashboard-links", json={},
                    headers=ADMIN).status_code == 404


def test_a_bootstrap_key_removed_from_the_configuration_ends_its_sessions(
        eventlog_settings: Settings) -> None:
    """Replicas restarted without the key (the cursor secret kept) refuse its sessions."""
    settings = eventlog_settings.model_copy(update={"cursor_secret": "kept"})
    before = SessionSigner(settings)
    cookie, _ = before.issue(bootstrap_principal("acme"), "key-acme", "acme")
    assert before.open(cookie) is not None
    after = SessionSigner(settings.model_copy(update={
        "api_keys": {k: t for k, t in settings.api_keys.items() if k != "key-acme"}}))
    assert after.open(cookie) is None


def test_without_secret_material_no_session_or_link_is_issued(
        eventlog_settings: Settings) -> None:
    """No cursor secret and no bootstrap keys: nothing secret to sign with, so nothing is
    signed (a MAC keyed by public material would let anyone forge a session)."""
    bare = SessionSigner(eventlog_settings.model_copy(update={"cursor_secret": "",
                                                              "api_keys": {}}))
    assert not bare.configured
    with pytest.raises(NotConfigured):
        bare.issue_link("acme", int(time.time()) + 60)
    keyed = SessionSigner(eventlog_settings.model_copy(update={"cursor_secret": ""}))
    cookie, _ = keyed.issue(bootstrap_principal("acme"), "key-acme", "acme")
    assert bare.open(cookie) is None and not bare.csrf_valid("n", bare.csrf_token("n"))
