"""The dashboard's pages and actions against a real broker, sink and ClickHouse: sign-in,
cookie flags, CSRF refusals that change nothing, every page, and tenant isolation."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.services.eventlog.conftest import ACME
from tests.services.eventlog.test_dlq_api import dead_task, publish_dead
from tests.support.eventlog import eventually, make_event, publish_attempts, publish_events
from webhooks.delivery import AttemptRecord, DeliveryTask
from webhooks.envelope import Envelope
from webhooks.settings import Settings

RECEIVER_ANSWER = "upstream database is down (dashboard test)"


class Browser:
    """A cookie-keeping client of the dashboard, as a browser would use it."""

    def __init__(self, api: TestClient) -> None:
        # Its own client (own cookie jar) on the module's app; the app's lifespan (the
        # sink) is already running under ``api``.
        self.client = TestClient(api.app, follow_redirects=False)

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
    return found.group(1)


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
