"""Mutual TLS and the egress proxy end to end: an endpoint created through the public API
with a client certificate, its key and a private CA bundle; the fanout worker in its own
process with ``WEBHOOKS_DELIVERY_PROXY`` set (a real proxy.py with credentials); the real
broker; a receiver that requires the client certificate. When the proxy dies, attempts
fail as ``connect`` and the task is retried as usual until the proxy is back."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import trustme
from fastapi.testclient import TestClient
from standardwebhooks.webhooks import Webhook

from services.eventlog.app import create_app
from services.localdev.service_process import ServiceProcess
from tests.services.eventlog.conftest import ACME
from tests.services.fanout.harness import Platform
from tests.support.eventlog import eventually
from tests.support.http_proxy import HttpProxy
from tests.support.receiver import Receiver
from tests.support.tls_material import ca_pem, client_certificate, mutual_tls_server
from webhooks.settings import Settings
from webhooks.topics import ensure_topics

PROXY_PASSWORD = "pr0xy-pass/word"


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpProxy]:
    started = HttpProxy(tmp_path_factory.mktemp("proxy"), host="127.0.0.3",
                        credentials=("fanout", PROXY_PASSWORD)).start()
    yield started
    started.stop()


@pytest.fixture(scope="module")
def settings(make_settings: Callable[..., Settings], proxy: HttpProxy) -> Settings:
    """Every delivery through the proxy; a retry 1 s, 3 s and 10 s after a failure, so a
    task outlives the proxy's restart."""
    module_settings = make_settings(delivery_proxy=proxy.setting(),
                                    retry_schedule="1s,3s,10s", sink_batch_wait=0.1)
    ensure_topics(module_settings)
    return module_settings


@pytest.fixture(scope="module")
def api(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture(scope="module")
def mtls_receiver(receivers_ca: trustme.CA, clients_ca: trustme.CA) -> Iterator[Receiver]:
    server = Receiver(tls=mutual_tls_server(receivers_ca, clients_ca)).start()
    yield server
    server.stop()


def closing(_: int) -> tuple[int, dict[str, str], float]:
    """200, and the connection closed: the proxy logs a tunnel when it ends."""
    return 200, {"connection": "close"}, 0.0


def attempts_of(api: TestClient, endpoint_id: str, event_id: str) -> list[dict[str, Any]]:
    page = api.get(f"/v1/endpoints/{endpoint_id}/attempts", headers=ACME,
                   params={"event_id": event_id, "limit": 100})
    assert page.status_code == 200, page.text
    return page.json()["data"]


def test_an_mtls_endpoint_created_through_the_api_is_delivered_through_the_proxy(
        api: TestClient, worker: ServiceProcess, proxy: HttpProxy, mtls_receiver: Receiver,
        receivers_ca: trustme.CA, clients_ca: trustme.CA, settings: Settings) -> None:
    client = client_certificate(clients_ca)
    url = mtls_receiver.on("/mtls", closing)
    created = api.post("/v1/endpoints", headers=ACME, json={
        "url": url, "events": ["order.*"],
        "tls": {"client_cert": client.cert, "client_key": client.key,
                "ca_bundle": ca_pem(receivers_ca)}})
    assert created.status_code == 201, created.text
    endpoint = created.json()
    assert endpoint["tls"]["client_key"] == "[masked]"

    # Once the worker's view has the endpoint (a test message arrived), an event reaches
    # the receiver, which lets it in only with the client certificate, through a tunnel
    # to the receiver's address.
    def test_message_arrived() -> bool:
        if any(json.loads(r.body)["type"] == "webhook.test" for r in mtls_receiver.at("/mtls")):
            return True
        sent = api.post(f"/v1/endpoints/{endpoint['id']}/test", headers=ACME)
        assert sent.status_code == 202, sent.text
        return False

    eventually(test_message_arrived, timeout=60, interval=2.0)
    platform = Platform(settings)
    shipped = platform.event("order.shipped")
    [request] = eventually(lambda: received(mtls_receiver, shipped.id))
    assert Webhook(endpoint["secret"]).verify(request.body, request.headers)["id"] == shipped.id
    proxy.wait_for_log(f"CONNECT 127.0.0.1:{mtls_receiver.port} ")
    [attempt] = eventually(lambda: attempts_of(api, endpoint["id"], shipped.id))
    assert (attempt["status"], attempt["error"]) == ("succeeded", None)

    # The proxy dies: the next event's attempt fails as connect, and the task is retried
    # from the retry tiers like any failure; back, the proxy carries the retry through.
    proxy.stop()
    paid = platform.event("order.paid")
    [failed] = eventually(lambda: attempts_of(api, endpoint["id"], paid.id), timeout=30)
    assert (failed["attempt"], failed["status"], failed["error"]) == (1, "failed", "connect")
    assert failed["response_body"] == "cannot reach the egress proxy (Connection refused)"
    assert failed["next_attempt_at"] is not None
    proxy.start()
    [retried] = eventually(lambda: received(mtls_receiver, paid.id), timeout=60)
    assert int(retried.headers["webhook-attempt"]) >= 2
    log = eventually(lambda: attempts_of(api, endpoint["id"], paid.id)[-1]["status"]
                     == "succeeded" and attempts_of(api, endpoint["id"], paid.id))
    assert [a["error"] for a in log[:-1]] == ["connect"] * (len(log) - 1)

    # The proxy's password and the client key never reach the worker's log.
    worker_output = worker.log_path.read_text()
    assert "every delivery goes through the proxy http://fanout:***@127.0.0.3:" in worker_output
    assert PROXY_PASSWORD not in worker_output and "pr0xy-pass%2Fword" not in worker_output
    assert client.key.splitlines()[1] not in worker_output


def received(receiver: Receiver, event_id: str) -> list[Any]:
    """What the receiver got on /mtls for ``event_id``."""
    return [r for r in receiver.at("/mtls") if json.loads(r.body)["id"] == event_id]
