"""The dashboard in headless Chromium against the real stack: the eventlog under uvicorn,
ingest and a fanout worker as processes (``webhooks serve …``), the session's Kafka broker
and ClickHouse engine, and a real receiver.

A person's path: sign in, find the failing endpoint, read the receiver's answer, replay
from the DLQ once the receiver is fixed, see the delivery arrive. Each page is saved as a
screenshot under ``test-artifacts/dashboard/`` (git-ignored). Another tenant's key sees
none of it. The metrics the docs, the alert rules and the Grafana board name exist on
the services' ``/metrics`` and move with the traffic.

Browser: Debian's ``chromium`` (``/usr/bin/chromium``) driven by Playwright for Python;
Playwright's own browser download is not used. On a fresh machine the fixture installs the
package with apt-get when it runs as root, and skips with the reason otherwise.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from standardwebhooks.webhooks import Webhook

from services.eventlog.app import create_app
from services.localdev.kafka_broker import REPO_ROOT
from services.localdev.service_process import ServiceProcess
from tests.services.fanout.conftest import worker_log
from tests.support.eventlog import eventually
from tests.support.receiver import Receiver
from tests.support.server_thread import ServerThread
from webhooks.settings import Settings
from webhooks.topics import ensure_topics

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO_ROOT / "test-artifacts" / "dashboard"
ACME_KEY, GLOBEX_KEY = "key-acme", "key-globex"
pytestmark = pytest.mark.slow


def ensure_chromium() -> Path:
    """Debian's chromium, installed with apt-get if missing and we may; else a skip."""
    if CHROMIUM.exists():
        return CHROMIUM
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip("headless browser tests need Debian's chromium: run "
                    "`sudo apt-get install -y chromium` (not root here, cannot install it)")
    for command in (["apt-get", "install", "-y", "chromium"],
                    ["sh", "-c", "apt-get update && apt-get install -y chromium"]):
        if subprocess.run(command, capture_output=True, timeout=900).returncode == 0 \
                and CHROMIUM.exists():
            return CHROMIUM
    pytest.skip("`apt-get install -y chromium` failed: no package source reachable?")


@pytest.fixture(scope="module")
def stack_settings(make_settings: Callable[..., Settings]) -> Settings:
    """Two quick retry tiers, so a failing delivery reaches the DLQ in seconds; JSON logs."""
    settings = make_settings(retry_schedule="1s,2s", sink_batch_wait=0.1, sink_batch_size=500,
                             log_format="json")
    ensure_topics(settings)
    return settings


@pytest.fixture(scope="module")
def receiver_state() -> dict[str, bool]:
    return {"broken": True}


@pytest.fixture(scope="module")
def stack(stack_settings: Settings, receiver: Receiver, receiver_state: dict[str, bool]
          ) -> Iterator[dict[str, Any]]:
    """Eventlog (in this process: it owns the embedded ClickHouse), two endpoints of acme
    (one failing while ``receiver_state['broken']``), one of globex, then ingest and a
    fanout worker as child processes."""
    failing_url = receiver.on("/failing", lambda n: (503 if receiver_state["broken"] else 200,
                                                     {}, 0.0))
    healthy_url = receiver.url("/healthy")
    globex_url = receiver.url("/globex")
    with ServerThread(create_app(stack_settings)) as eventlog:
        api = httpx.Client(base_url=eventlog.url, timeout=30)

        def endpoint(key: str, url: str, description: str) -> dict[str, Any]:
            response = api.post("/v1/endpoints", headers={"Authorization": f"Bearer {key}"},
                                json={"url": url, "events": ["order.*"],
                                      "description": description})
            assert response.status_code == 201, response.text
            return response.json()

        endpoints = {"failing": endpoint(ACME_KEY, failing_url, "orders to the warehouse"),
                     "healthy": endpoint(ACME_KEY, healthy_url, "orders to billing"),
                     "globex": endpoint(GLOBEX_KEY, globex_url, "globex orders")}
        fanout = ServiceProcess("fanout", stack_settings,
                                worker_log(stack_settings, "dashboard-fanout"))
        ingest = ServiceProcess("ingest", stack_settings,
                                worker_log(stack_settings, "dashboard-ingest"))
        with fanout, ingest:
            yield {"eventlog": eventlog, "api": api, "fanout": fanout, "ingest": ingest,
                   "endpoints": endpoints}
        api.close()


def publish(stack: dict[str, Any], key: str, type: str, **data: Any) -> dict[str, Any]:
    """An event through ingest's HTTP API, as a producer sends it."""
    response = httpx.post(f"{stack['ingest'].url}/v1/events", timeout=30,
                          headers={"Authorization": f"Bearer {key}"},
                          json={"type": type, "data": {"object": data}})
    assert response.status_code == 202, response.text
    return response.json()


@pytest.fixture(scope="module")
def dead_event(stack: dict[str, Any], receiver: Receiver) -> dict[str, Any]:
    """An acme order whose delivery to the failing endpoint ran out of retries (DLQ),
    delivered to the healthy one; and a globex order."""
    publish(stack, GLOBEX_KEY, "order.created", id="globex_order_1")
    event = publish(stack, ACME_KEY, "order.created", id="order_42")
    receiver.wait_for("/healthy", 1)

    def dead() -> list[dict[str, Any]]:
        listed = stack["api"].get("/v1/dlq", headers={"Authorization": f"Bearer {ACME_KEY}"})
        return listed.json()["data"]
    eventually(dead, timeout=60)
    assert len(receiver.at("/failing")) == 3  # the attempt and two retries, all 503
    return event


@pytest.fixture(scope="module")
def browser(stack: dict[str, Any]) -> Iterator[Any]:
    chromium = ensure_chromium()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(chromium), headless=True,
                                              args=["--no-sandbox"])  # root in a container
        yield launched
        launched.close()


def signed_in(browser: Any, stack: dict[str, Any], key: str, **context: Any) -> Any:
    """A new browser context (own cookies) signed in with ``key``; its page."""
    page = browser.new_context(base_url=stack["eventlog"].url, **context).new_page()
    page.goto("/dashboard")
    page.fill("input[name=api_key]", key)
    page.click("button[type=submit]")
    page.wait_for_url("**/dashboard/endpoints")
    return page


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_a_person_finds_the_failing_endpoint_and_replays_its_dead_delivery(
        browser: Any, stack: dict[str, Any], dead_event: dict[str, Any],
        receiver: Receiver, receiver_state: dict[str, bool]) -> None:
    failing = stack["endpoints"]["failing"]
    page = browser.new_context(base_url=stack["eventlog"].url).new_page()
    page.goto("/dashboard")
    page.wait_for_url("**/dashboard/sign-in")
    shot(page, "01-sign-in")
    page.fill("input[name=api_key]", "not-a-key")
    page.click("button[type=submit]")
    assert page.get_by_role("alert").inner_text() == "That API key is not valid."
    page.fill("input[name=api_key]", ACME_KEY)
    page.click("button[type=submit]")
    page.wait_for_url("**/dashboard/endpoints")
    cookie = next(c for c in page.context.cookies() if c["name"] == "webhooks_dashboard")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert page.evaluate("document.cookie") == ""  # scripts cannot read the session

    # The failing endpoint is on top, marked, with its failure and the receiver's answer.
    row = page.locator("tr.is-failing").first
    assert failing["url"] in row.inner_text()
    assert "HTTP 503" in row.inner_text() and "0.0 %" in row.inner_text()
    shot(page, "02-endpoints")
    row.get_by_role("link", name=failing["url"]).click()
    page.get_by_role("link", name="Failed", exact=True).click()
    page.wait_for_url("**status=failed")
    attempts = page.locator("table.attempts tbody tr")
    assert attempts.count() == 3
    assert '{"received":true}' in attempts.first.inner_text()
    assert "http_status" in attempts.first.inner_text()
    shot(page, "03-endpoint-attempts")

    # The receiver is fixed; replay the dead delivery from the DLQ.
    receiver_state["broken"] = False
    page.get_by_role("link", name="Dead letters").click()
    dead_row = page.locator(f"tr:has-text('{dead_event['id']}')")
    assert "retries exhausted" in dead_row.inner_text()
    shot(page, "04-dlq")
    dead_row.get_by_role("button", name="Replay").click()
    assert page.get_by_role("status").inner_text() == "Replay queued: 1 task(s)."
    shot(page, "05-dlq-replayed")

    delivered = receiver.wait_for("/failing", 4, timeout=60)[-1]
    assert delivered.event_id == dead_event["id"]
    assert delivered.headers["webhook-id"] == dead_event["id"]

    # The event's page shows the delivery arrived (once the attempt is in the log).
    page.get_by_role("link", name="Events", exact=True).click()
    page.fill("input[name=q]", dead_event["id"])
    page.get_by_role("button", name="Search").click()
    page.wait_for_url(f"**/dashboard/events/{dead_event['id']}")

    def shows_delivered() -> bool:
        page.reload()
        return "delivered" in page.locator(f"tr:has-text('{failing['id']}')").inner_text()
    eventually(shows_delivered, timeout=30, interval=0.5)
    shot(page, "06-event")
    page.goto("/dashboard/events")
    assert dead_event["id"] in page.content()
    shot(page, "07-events")
    page.get_by_role("link", name="Charts").click()
    assert page.locator("svg.chart").count() == 2
    shot(page, "08-charts")
    page.goto(f"/dashboard/endpoints/{failing['id']}")
    shot(page, "09-endpoint")


def test_it_fits_a_phone(browser: Any, stack: dict[str, Any], dead_event: dict[str, Any]
                         ) -> None:
    page = signed_in(browser, stack, ACME_KEY, viewport={"width": 390, "height": 844},
                     is_mobile=True, has_touch=True)
    # No sideways scrolling of the page itself (wide tables become stacked cards).
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    shot(page, "10-endpoints-phone")
    page.goto("/dashboard/dlq")
    shot(page, "11-dlq-phone")


def test_another_tenant_sees_none_of_it(browser: Any, stack: dict[str, Any],
                                        dead_event: dict[str, Any]) -> None:
    page = signed_in(browser, stack, GLOBEX_KEY)
    acme = [stack["endpoints"]["failing"]["id"], stack["endpoints"]["healthy"]["id"],
            "orders to the warehouse", dead_event["id"], "order_42"]
    for path in ("/dashboard/endpoints", "/dashboard/events", "/dashboard/dlq",
                 "/dashboard/charts", "/dashboard/events?q=order.*"):
        page.goto(path)
        html = page.content()
        for secret in acme:
            assert secret not in html, (path, secret)
    # Asked for by id (the id echoed in "no event …"): not found, nothing else shown.
    for path in (f"/dashboard/events/{dead_event['id']}", f"/dashboard/endpoints/{acme[0]}"):
        assert page.goto(path).status == 404
        html = page.content()
        for secret in acme:
            assert secret in path or secret not in html, (path, secret)
    page.goto("/dashboard/endpoints")
    assert "globex orders" in page.content()
    shot(page, "12-other-tenant")


def test_a_customer_signs_in_with_a_link_from_an_admin(
        browser: Any, stack: dict[str, Any], dead_event: dict[str, Any]) -> None:
    """An admin mints a sign-in link for acme and mails it; the customer clicks it in a
    web mail on another site and lands on acme's endpoints, with no API key in the
    browser and no token left in the address bar. A forged link opens nothing."""
    api, admin = stack["api"], {"Authorization": "Bearer key-admin"}
    assert api.post("/v1/tenants", json={"id": "acme"}, headers=admin).status_code == 201
    minted = api.post("/v1/tenants/acme/dashboard-links", json={"expires_in": 600},
                      headers=admin)
    assert minted.status_code == 201, minted.text
    url = minted.json()["url"]
    assert url.startswith(stack["eventlog"].url + "/dashboard/sign-in/link?token=")

    context = browser.new_context()
    page = context.new_page()
    # A web mail on another site: the click is a cross-site navigation, on which browsers
    # send no SameSite=Strict cookie, redirects included.
    mail = f'<html><body><p>Your dashboard:</p><a href="{url}">Open the dashboard</a></body></html>'
    page.route("http://mail.example/**",
               lambda route: route.fulfill(content_type="text/html", body=mail))
    page.goto("http://mail.example/inbox")
    page.get_by_role("link", name="Open the dashboard").click()
    page.wait_for_url("**/dashboard/endpoints")
    assert "token=" not in page.url
    assert "orders to the warehouse" in page.content()
    assert page.locator(".tenant").inner_text() == "acme"
    assert page.get_by_role("link", name="New endpoint").is_visible()  # read and manage
    cookie = next(c for c in context.cookies() if c["name"] == "webhooks_dashboard")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    link_expires = datetime.fromisoformat(minted.json()["expires"]).timestamp()
    assert 0 < cookie["expires"] <= link_expires + 1  # the session ends with the link
    shot(page, "18-signed-in-with-a-link")
    page.get_by_role("link", name="Dead letters").click()
    assert dead_event["id"] in page.content()

    # The same link with one character of its signature changed opens nothing.
    forged = url[:-3] + ("AAA" if not url.endswith("AAA") else "BBB")
    other = browser.new_context().new_page()
    other.goto(forged)
    assert "This sign-in link is not valid" in other.get_by_role("alert").inner_text()
    other.goto(f"{stack['eventlog'].url}/dashboard/endpoints")
    other.wait_for_url("**/dashboard/sign-in")
    shot(other, "19-forged-link")
    context.close()


def metric_names(text: str) -> set[str]:
    """Every name a PromQL expression may use for the families in ``text``."""
    names = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
        names.update(family.name + suffix for suffix in suffixes.get(family.type, ()))
        names.update(sample.name for sample in family.samples)
    return names


def sample(text: str, name: str, **labels: str) -> float:
    return sum(s.value for family in text_string_to_metric_families(text)
               for s in family.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def named_metrics() -> dict[str, set[str]]:
    """The ``webhooks_…`` / ``eventlog_…`` metric names the operators' documentation page
    (docs/operators/observability.md), the alert rules and the Grafana board use."""
    section = (REPO_ROOT / "docs/operators/observability.md").read_text()
    alerts = (REPO_ROOT / "deploy/prometheus/alerts.yaml").read_text()
    expressions = " ".join(rule["expr"] for group in yaml.safe_load(alerts)["groups"]
                           for rule in group["rules"])
    board = json.loads((REPO_ROOT / "deploy/grafana/webhooks.json").read_text())
    targets = " ".join(target["expr"] for panel in board["panels"]
                       for target in panel.get("targets", []))
    pattern = re.compile(r"\b((?:webhooks|eventlog)_[a-z_]+)")
    return {where: set(pattern.findall(text)) for where, text in
            (("docs", section), ("alerts", expressions), ("grafana", targets))}


def test_metrics_named_in_the_readme_alerts_and_board_exist_and_move(
        stack: dict[str, Any], dead_event: dict[str, Any], stack_settings: Settings) -> None:
    scrapes = {name: stack[name].metrics() for name in ("fanout", "ingest")}
    scrapes["eventlog"] = httpx.get(f"{stack['eventlog'].url}/metrics", timeout=30).text
    exported = set().union(*(metric_names(text) for text in scrapes.values()))
    for where, names in named_metrics().items():
        assert names, f"no metric names found in the {where}"
        missing = names - exported
        assert not missing, f"{where} names metrics no service exports: {sorted(missing)}"

    # They moved with this module's traffic (two events in, one dead delivery, a replay).
    fanout, ingest, eventlog = scrapes["fanout"], scrapes["ingest"], scrapes["eventlog"]
    assert sample(ingest, "webhooks_ingest_accepted_total") >= 2
    assert sample(fanout, "webhooks_deliveries_total", outcome="delivered") >= 2
    assert sample(fanout, "webhooks_deliveries_total", outcome="dead_lettered") >= 1
    assert sample(fanout, "webhooks_delivery_errors_total", error="http_status") >= 3
    assert sample(fanout, "webhooks_retries_total", tier="1s") >= 1
    assert sample(fanout, "webhooks_dead_lettered_total") >= 1
    assert sample(fanout, "webhooks_delivery_latency_seconds_count") >= 5
    assert sample(eventlog, "webhooks_dlq_depth") >= 1
    assert sample(eventlog, "webhooks_endpoints", state="enabled") == 3
    assert sample(eventlog, "eventlog_sink_rows_total", table="attempts") >= 5
    fanout_group = f"{stack_settings.topic_prefix}-fanout"
    assert f'group="{fanout_group}"' in eventlog  # group lag, from Kafka's committed offsets


def test_service_logs_are_json_lines_with_the_delivery_ids(
        stack: dict[str, Any], dead_event: dict[str, Any]) -> None:
    """``WEBHOOKS_LOG_FORMAT=json`` in the service processes: the fanout's record of the
    dead-lettered delivery names its event, endpoint and attempt."""
    lines = [line for line in stack["fanout"].log_tail(10_000_000).splitlines()
             if line.startswith("{")]
    records = [json.loads(line) for line in lines]
    assert records and all({"time", "level", "logger", "message"} <= r.keys() for r in records)
    [dead] = [r for r in records if r["message"].startswith("dead-lettered")]
    assert dead["event_id"] == dead_event["id"]
    assert dead["endpoint_id"] == stack["endpoints"]["failing"]["id"]
    assert dead["attempt"] == 3 and dead["tenant"] == "acme"
    ingest = [json.loads(line) for line in stack["ingest"].log_tail(10_000_000).splitlines()
              if line.startswith("{")]
    assert any(r["logger"].startswith("uvicorn") for r in ingest)


def test_a_person_creates_edits_and_deletes_an_endpoint(
        browser: Any, stack: dict[str, Any], receiver: Receiver) -> None:
    """Runs last: the endpoint it adds is gone again before the module ends."""
    api, acme = stack["api"], {"Authorization": f"Bearer {ACME_KEY}"}
    page = signed_in(browser, stack, ACME_KEY)
    page.get_by_role("link", name="New endpoint").click()
    page.wait_for_url("**/dashboard/endpoints/new")
    # A private address is refused by the target policy: the form comes back as typed.
    page.fill("input[name=url]", "http://10.0.0.7/hooks")
    page.fill("input[name=events]", "parcel.*")
    page.fill("input[name=description]", "parcels to the depot")
    page.fill("input[name=rate_limit]", "5")
    page.get_by_role("button", name="Create endpoint").click()
    assert "target address 10.0.0.7 is not public" in page.get_by_role("alert").inner_text()
    assert page.input_value("input[name=description]") == "parcels to the depot"
    shot(page, "13-endpoint-refused")
    assert "parcels to the depot" not in api.get("/v1/endpoints", headers=acme).text

    url = receiver.url("/from-the-dashboard")
    page.fill("input[name=url]", url)
    # A plain and a secret custom header, and a payload filter: only parcels.
    page.get_by_label("Header 1: name").fill("X-Depot")
    page.get_by_label("Header 1: value").fill("north")
    page.get_by_label("Header 2: name").fill("Authorization")
    page.get_by_label("Header 2: value").fill("Bearer depot-s3cr3t")
    page.get_by_label("Header 2: secret").check()
    page.fill("textarea[name=filter]", '{"data.object.id": {"$regex": "^parcel_"}}')
    page.get_by_role("button", name="Create endpoint").click()
    assert page.get_by_role("heading", name="Endpoint created").is_visible()
    secret = page.get_by_test_id("new-secret").inner_text()
    shot(page, "14-endpoint-created")
    [created] = [e for e in api.get("/v1/endpoints", headers=acme).json()["data"]
                 if e["url"] == url]
    assert created["events"] == ["parcel.*"] and created["rate_limit"] == 5
    assert created["filter"] == {"data.object.id": {"$regex": "^parcel_"}}

    # Deliveries to it are signed with the secret the page showed and carry the headers;
    # a parcel the filter leaves out is not sent. (The fanout applies a new endpoint
    # within about a second: publish until one arrives.)
    def delivered() -> bool:
        publish(stack, ACME_KEY, "parcel.sent", id="crate_1")
        publish(stack, ACME_KEY, "parcel.sent", id="parcel_7")
        try:
            receiver.wait_for("/from-the-dashboard", 1, timeout=3)
        except TimeoutError:
            return False
        return True
    eventually(delivered, timeout=30, interval=0.1)
    arrived = receiver.at("/from-the-dashboard")[0]
    assert Webhook(secret).verify(arrived.body, arrived.headers)["type"] == "parcel.sent"
    assert json.loads(arrived.body)["data"]["object"]["id"] == "parcel_7"
    assert (arrived.headers["x-depot"], arrived.headers["authorization"]) == (
        "north", "Bearer depot-s3cr3t")

    page.get_by_role("link", name="Go to the endpoint").click()
    assert page.get_by_test_id("headers").inner_text().splitlines() == [
        "X-Depot: north", "Authorization: [masked] secret"]
    assert "depot-s3cr3t" not in page.content()
    page.get_by_role("link", name="Edit", exact=True).click()
    page.wait_for_url(f"**/dashboard/endpoints/{created['id']}/edit")
    assert page.input_value("input[name=rate_limit]") == "5"
    assert page.get_by_label("Header 2: value").input_value() == ""  # never shown
    page.fill("input[name=events]", "parcel.*, invoice.paid")
    page.fill("input[name=rate_limit]", "")
    page.get_by_label("Header 1: value").fill("south")
    page.get_by_role("button", name="Save changes").click()
    assert page.get_by_role("status").inner_text() == "Endpoint saved."
    shot(page, "15-endpoint-edited")
    changed = api.get(f"/v1/endpoints/{created['id']}", headers=acme).json()
    assert changed["events"] == ["parcel.*", "invoice.paid"] and changed["rate_limit"] is None
    # The secret header nobody retyped is still sent.
    def sent_after_the_edit() -> list[Any]:
        publish(stack, ACME_KEY, "parcel.sent", id="parcel_8")
        return [r for r in receiver.at("/from-the-dashboard")
                if r.headers.get("x-depot") == "south"]
    after_edit = eventually(sent_after_the_edit, timeout=30, interval=1.0)[0]
    assert after_edit.headers["authorization"] == "Bearer depot-s3cr3t"
    assert all(json.loads(r.body)["data"]["object"]["id"].startswith("parcel_")
               for r in receiver.at("/from-the-dashboard"))  # never the crate

    # Deleting asks first; Cancel keeps it.
    page.get_by_role("link", name="Delete…").click()
    assert page.get_by_role("heading", name="Delete this endpoint?").is_visible()
    page.get_by_role("link", name="Cancel").click()
    page.wait_for_url(f"**/dashboard/endpoints/{created['id']}")
    assert api.get(f"/v1/endpoints/{created['id']}", headers=acme).status_code == 200
    page.get_by_role("link", name="Delete…").click()
    shot(page, "16-endpoint-delete-confirm")
    page.get_by_role("button", name="Delete endpoint").click()
    page.wait_for_url("**/dashboard/endpoints?done=deleted")
    assert page.get_by_role("status").inner_text().startswith("Endpoint deleted")
    assert url not in page.content()
    assert api.get(f"/v1/endpoints/{created['id']}", headers=acme).status_code == 404
    shot(page, "17-endpoint-deleted")
