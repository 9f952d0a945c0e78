"""Secrets at rest: after endpoints are created, changed, rotated, disabled and
failed on (retry tiers, DLQ, endpoint-health streaks), no secret is readable in any topic,
any ClickHouse table or any log (signing secrets, secret header values, an endpoint's TLS
client key); only sealed texts are stored, and deliveries still verify.

The eventlog runs in this process (so the test reads its ClickHouse tables directly), the
fanout as deployed, in its own process; both with the test keyring.
"""

from __future__ import annotations

import base64
import binascii
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import trustme
from clickhouse_connect.driver.client import Client
from fastapi.testclient import TestClient
from standardwebhooks.webhooks import Webhook

from services.eventlog.app import create_app
from services.eventlog.clickhouse import create_clickhouse_client
from services.localdev.service_process import ServiceProcess
from tests.services.eventlog.conftest import ACME
from tests.services.fanout.conftest import worker_log
from tests.services.fanout.test_deliverer import closed_port
from tests.support.eventlog import eventually, make_event, publish_events
from tests.support.kafka import read_to_end
from tests.support.receiver import Receiver
from tests.support.tls_material import client_certificate
from webhooks.endpoints import Endpoint
from webhooks.settings import Settings
from webhooks.topics import Topics, ensure_topics


@pytest.fixture(scope="module")
def settings(make_settings: Callable[..., Settings]) -> Settings:
    """Short tiers (1s, 2s: a failing endpoint reaches the DLQ in ~3 s); failure streaks
    saved after 2 s (a tenth of ``disable_after``), so endpoint-health records exist."""
    module_settings = make_settings(retry_schedule="1s,2s", disable_after="20s",
                                    sink_batch_wait=0.1)
    ensure_topics(module_settings)
    return module_settings


class LogCapture(logging.Handler):
    """Every record logged in this process while installed, formatted with tracebacks."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture(scope="module")
def logs() -> Iterator[LogCapture]:
    capture = LogCapture()
    root = logging.getLogger()
    previous = root.level
    root.addHandler(capture)
    root.setLevel(logging.DEBUG)
    yield capture
    root.removeHandler(capture)
    root.setLevel(previous)


@pytest.fixture(scope="module")
def api(settings: Settings, logs: LogCapture) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture(scope="module")
def fanout(settings: Settings) -> Iterator[ServiceProcess]:
    process = ServiceProcess("fanout", settings.model_copy(update={"log_level": "DEBUG"}),
                             worker_log(settings, "at-rest")).start()
    yield process
    process.stop()


def secret_forms(secret: str) -> list[bytes]:
    """Every spelling of a secret worth searching for: the ``whsec_`` text, its base64
    (with and without padding, url-safe), the raw key bytes and their hex."""
    encoded = secret.removeprefix("whsec_")
    raw = base64.b64decode(encoded)
    return [secret.encode(), encoded.encode(), encoded.rstrip("=").encode(), raw,
            base64.urlsafe_b64encode(raw).rstrip(b"="), binascii.hexlify(raw)]


def table_bytes(client: Client) -> dict[str, bytes]:
    """Every row of every table of the module's database, each cell as its bytes."""
    tables = [row[0] for row in client.query(
        "SELECT name FROM system.tables WHERE database = currentDatabase()").result_rows]
    dumped = {}
    for table in tables:
        cells = [cell if isinstance(cell, bytes) else str(cell).encode()
                 for row in client.query(f"SELECT * FROM {table}").result_rows for cell in row]
        dumped[table] = b"\x00".join(cells)
    return dumped


def topic_bytes(settings: Settings, topic: str) -> bytes:
    """Keys, values and headers of every record on ``topic``."""
    parts = []
    for message in read_to_end(settings, topic):
        parts += [message.key() or b"", message.value() or b""]
        parts += [name.encode() + b"=" + (value or b"") for name, value in message.headers() or []]
    return b"\x00".join(parts)


def key_forms(key_pem: str) -> list[bytes]:
    """A PEM private key as sent, each line of its base64 body, the DER bytes it encodes
    and their hex."""
    body = [line for line in key_pem.splitlines() if line and "-----" not in line]
    der = base64.b64decode("".join(body))
    return [key_pem.encode(), *(line.encode() for line in body), "".join(body).encode(), der,
            binascii.hexlify(der)]


def failing(_: int) -> tuple[int, dict[str, str], float]:
    return 500, {}, 0.0


def gone(_: int) -> tuple[int, dict[str, str], float]:
    return 410, {}, 0.0


def test_no_secret_is_stored_or_logged_in_a_readable_form(
        api: TestClient, fanout: ServiceProcess, receiver: Receiver, settings: Settings,
        logs: LogCapture) -> None:
    secrets: list[str] = []

    def create(path: str, **fields: Any) -> dict[str, Any]:
        answer = api.post("/v1/endpoints", headers=ACME,
                          json={"url": receiver.url(path), "events": ["order.*"], **fields})
        assert answer.status_code == 201, answer.text
        secrets.append(answer.json()["secret"])
        return answer.json()

    def rotate(endpoint_id: str) -> str:
        answer = api.post(f"/v1/endpoints/{endpoint_id}/rotate-secret", headers=ACME)
        assert answer.status_code == 200, answer.text
        secrets.append(answer.json()["secret"])
        return answer.json()["secret"]

    receiver.on("/failing", failing)
    receiver.on("/gone", gone)
    token = "tok_" + base64.b64encode(b"the receiver's own bearer token").decode()
    ok = create("/ok", headers=[{"name": "Authorization", "value": f"Bearer {token}",
                                 "secret": True}, {"name": "X-Team", "value": "ops"}])
    chosen = "whsec_" + base64.b64encode(b"a secret the client chose itself!").decode()
    own = create("/own", secret=chosen, ordered=True)  # its tasks go to the ordered topic
    broken = create("/failing")
    leaving = create("/gone")
    # An endpoint with a client certificate: its key is a secret too. Its receiver is not
    # there (connection refused), so its tasks fail into the tiers after the worker
    # opened the key to build the TLS context.
    certificate = client_certificate(trustme.CA())
    mtls = api.post("/v1/endpoints", headers=ACME, json={
        "url": f"https://127.0.0.1:{closed_port()}/mtls", "events": ["order.*"],
        "tls": {"client_cert": certificate.cert, "client_key": certificate.key}})
    assert mtls.status_code == 201, mtls.text
    secrets.append(mtls.json()["secret"])
    rotate(ok["id"])
    current_ok = rotate(ok["id"])  # three secrets now, two of them in their overlap
    rotate(broken["id"])
    assert api.patch(f"/v1/endpoints/{own['id']}", headers=ACME,
                     json={"description": "changed"}).status_code == 200
    shown = api.get(f"/v1/endpoints/{ok['id']}/secret", headers=ACME).json()["secrets"]
    # Shown opened, newest first: the API answers as before encryption.
    assert [s["secret"] for s in shown] == [current_ok, secrets[5], ok["secret"]]

    # Deliveries: every endpoint gets the events (the fanout's view first has to see them),
    # signed with the plain secrets, verifiable by the published library.
    time.sleep(2)
    events = publish_events(settings, [make_event("acme", "order.created", n=n)
                                       for n in range(3)])
    assert api.post(f"/v1/endpoints/{ok['id']}/test", headers=ACME).status_code == 202
    for request in receiver.wait_for("/ok", 4, timeout=60):
        assert Webhook(current_ok).verify(request.body, request.headers)
        assert request.headers["authorization"] == f"Bearer {token}"  # opened to send
        assert request.headers["x-team"] == "ops"
    for request in receiver.wait_for("/own", 3, timeout=60):
        assert Webhook(chosen).verify(request.body, request.headers)
    # The failing endpoint goes through both tiers into the DLQ, with a saved streak; the
    # one answering 410 is disabled by the fanout (which writes its record back).
    topics = Topics.from_settings(settings)
    eventually(lambda: len([m for m in read_to_end(settings, topics.dlq)
                            if m.key() == broken["id"].encode()]) == len(events), timeout=60)
    eventually(lambda: any(m.key() == broken["id"].encode()
                           for m in read_to_end(settings, topics.endpoint_health)), timeout=30)
    eventually(lambda: api.get(f"/v1/endpoints/{leaving['id']}",
                               headers=ACME).json()["disabled"], timeout=30)
    eventually(lambda: len(api.get(f"/v1/endpoints/{broken['id']}/attempts", headers=ACME,
                                   params={"limit": 1000}).json()["data"]) == 3 * len(events),
               timeout=30)
    assert settings.retry_schedule.tier_names == ["1s", "2s"]
    # The TLS endpoint's attempts got as far as the connection: the worker opened its key.
    mtls_errors = eventually(lambda: {a["error"] for a in api.get(
        f"/v1/endpoints/{mtls.json()['id']}/attempts", headers=ACME).json()["data"]})
    assert mtls_errors == {"connect"}

    # The compacted endpoints topic holds the secrets, sealed, in every record of every
    # writer (the API's and the fanout's disable).
    records = [Endpoint.from_json(m.value()) for m in read_to_end(settings, topics.endpoints)
               if m.value() is not None]
    assert {r.id for r in records} == {ok["id"], own["id"], broken["id"], leaving["id"],
                                       mtls.json()["id"]}
    assert {r.tls.client_key[:12] for r in records if r.tls} == {"whenc_v1.t1."}  # type: ignore[index]
    assert any(r.disabled for r in records if r.id == leaving["id"])
    assert all(s.secret.startswith("whenc_v1.t1.") for r in records for s in r.secrets)
    assert all(h.value.startswith("whenc_v1.t1.") for r in records for h in r.headers
               if h.secret)
    keyring = settings.secrets_key
    assert keyring is not None
    assert {s.secret for r in records for s in r.opened_secrets(keyring)} == set(secrets)

    # Nowhere at rest, and in no log line, in any spelling.
    stored = {f"topic {name}": topic_bytes(settings, name)
              for name in (topics.endpoints, topics.endpoint_health, topics.deliveries,
                           *(topics.retry(tier) for tier in topics.retry_tiers),
                           topics.ordered, topics.dlq, topics.attempts, topics.events,
                           topics.registry)}
    for name in (topics.endpoint_health, topics.deliveries, topics.retry("1s"), topics.ordered,
                 topics.dlq):
        assert stored[f"topic {name}"], f"{name} is empty: the test exercised nothing there"
    client = create_clickhouse_client(settings.clickhouse_url)
    tables = table_bytes(client)
    assert b"whenc_v1.t1." in tables["endpoints"] and tables["dlq"] and tables["attempts"]
    stored |= {f"table {name}": data for name, data in tables.items()}
    stored["eventlog log (this process)"] = "\n".join(logs.lines).encode()
    stored["fanout log"] = fanout.log_path.read_bytes()
    assert b"DEBUG" in stored["fanout log"] and logs.lines
    forms = [form for secret in secrets for form in secret_forms(secret)]
    forms += [token.encode(), token.removeprefix("tok_").encode(),
              base64.b64decode(token.removeprefix("tok_"))]
    forms += key_forms(certificate.key)
    found = [(where, form) for form in forms for where, data in stored.items() if form in data]
    assert found == []
    # Nor are the sealed texts logged (they are not secret, but have no business there).
    sealed = [stored for r in records for _, stored in r.stored_secrets()]
    assert not [text for text in sealed
                if text.encode() in stored["fanout log"] + stored["eventlog log (this process)"]]
