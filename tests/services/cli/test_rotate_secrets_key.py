"""A secrets key's whole life on a running platform: an install from before encryption
and one key, a second key added, ``webhooks rotate-secrets-key`` (the migration of the
plain records too), the old key retired; deliveries verify with the ``standardwebhooks``
library throughout. And what refuses: a process without the right key, a record sealed
with a key the fanout lacks, the command without a key it needs.

The eventlog runs in this process (restarted with each key ring), the fanout and the
command as deployed, each in its own process.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import trustme
from fastapi.testclient import TestClient
from standardwebhooks.webhooks import Webhook

from services.cli.secrets_key import rewrite_concurrent_changes
from services.eventlog.app import create_app
from services.localdev.kafka_broker import REPO_ROOT
from services.localdev.service_process import ServiceProcess, settings_env
from tests.services.eventlog.conftest import ACME
from tests.services.fanout.conftest import worker_log
from tests.support.eventlog import eventually, make_event, publish_events
from tests.support.kafka import read_to_end
from tests.support.receiver import Receiver
from tests.support.tls_material import client_certificate
from webhooks.acked_producer import AckedProducer
from webhooks.delivery import AttemptRecord
from webhooks.endpoint_secrets import EndpointRecords
from webhooks.endpoints import (
    Endpoint,
    EndpointSecret,
    EndpointTls,
    new_endpoint_id,
    tls_key_binding,
)
from webhooks.envelope import utcnow
from webhooks.secret_encryption import SecretsKeyring, key_id_of
from webhooks.settings import Settings
from webhooks.signing import generate_secret
from webhooks.topics import Topics, ensure_topics

OLD = SecretsKeyring([("r0", b"\x10" * 32)])
BOTH = SecretsKeyring([("r1", b"\x11" * 32), ("r0", b"\x10" * 32)])  # r1 seals, both open
NEW = SecretsKeyring([("r1", b"\x11" * 32)])
IMPOSTOR = SecretsKeyring([("r1", b"\x99" * 32), ("r0", b"\x10" * 32)])  # wrong bytes for r1


@pytest.fixture(scope="module")
def settings(make_settings: Callable[..., Settings]) -> Settings:
    module_settings = make_settings(secrets_key=OLD, sink_batch_wait=0.1)
    ensure_topics(module_settings)
    return module_settings


def with_keys(settings: Settings, keyring: SecretsKeyring | None) -> Settings:
    return settings.model_copy(update={"secrets_key": keyring})


@contextmanager
def eventlog(settings: Settings, keyring: SecretsKeyring) -> Iterator[TestClient]:
    with TestClient(create_app(with_keys(settings, keyring))) as client:
        yield client


@contextmanager
def fanout(settings: Settings, keyring: SecretsKeyring) -> Iterator[ServiceProcess]:
    name = f"keys-{'-'.join(keyring.key_ids)}"
    process = ServiceProcess("fanout", with_keys(settings, keyring),
                             worker_log(settings, name)).start()
    try:
        yield process
    finally:
        process.stop()


def webhooks_command(settings: Settings, keyring: SecretsKeyring | None, *args: str,
                     timeout: float = 90.0) -> subprocess.CompletedProcess[str]:
    """``webhooks <args>`` in its own process, configured by ``settings`` and ``keyring``."""
    return subprocess.run([sys.executable, "-m", "services.cli", *args], cwd=REPO_ROOT,
                          env=settings_env(with_keys(settings, keyring)), capture_output=True,
                          text=True, timeout=timeout)


def rotate(settings: Settings, keyring: SecretsKeyring, expect: int = 0) -> dict[str, Any]:
    done = webhooks_command(settings, keyring, "rotate-secrets-key", "--json")
    assert done.returncode == expect, done.stdout + done.stderr
    return json.loads(done.stdout)


def create(api: TestClient, receiver: Receiver, path: str) -> dict[str, Any]:
    answer = api.post("/v1/endpoints", headers=ACME,
                      json={"url": receiver.url(path), "events": ["order.*"]})
    assert answer.status_code == 201, answer.text
    return answer.json()


def latest_records(settings: Settings) -> dict[str, Endpoint | None]:
    latest: dict[str, Endpoint | None] = {}
    for message in read_to_end(settings, Topics.from_settings(settings).endpoints):
        value = message.value()
        latest[message.key().decode()] = None if value is None else Endpoint.from_json(value)
    return latest


def delivered(receiver: Receiver, path: str, event_id: str, secret: str) -> None:
    """``event_id`` arrived at ``path``, and its signature verifies with ``secret``."""
    def arrived() -> Any:
        return next((r for r in receiver.at(path) if r.event_id == event_id), None)
    request = eventually(arrived, timeout=60)
    assert Webhook(secret).verify(request.body, request.headers)["id"] == event_id


def test_a_plain_install_moves_to_a_new_key_without_stopping_deliveries(
        settings: Settings, receiver: Receiver) -> None:
    topics = Topics.from_settings(settings)
    # An install from before encryption left a plain record; this one seals with r0.
    plain_secret = generate_secret()
    now = utcnow()
    legacy = Endpoint(id=new_endpoint_id(), tenant="acme", url=receiver.url("/legacy"),
                      events=["order.*"], secrets=[EndpointSecret(secret=plain_secret)],
                      created=now, updated=now)
    AckedProducer(settings.kafka).send(topics.endpoints, legacy.to_json(),
                                       key=legacy.id.encode())
    secrets = {"/legacy": plain_secret}
    with eventlog(settings, OLD) as api, fanout(settings, OLD):
        first = create(api, receiver, "/first")
        secrets["/first"] = first["secret"]
        time.sleep(2)  # the fanout's view sees the new endpoint
        [event] = publish_events(settings, [make_event("acme", "order.created")])
        for path, secret in secrets.items():
            delivered(receiver, path, event.id, secret)

    # Step 1: every reader gets both keys, the new one first; new secrets are sealed with it.
    with eventlog(settings, BOTH) as api, fanout(settings, BOTH):
        second = create(api, receiver, "/second")
        secrets["/second"] = second["secret"]
        assert {key_id_of(s.secret) for r in latest_records(settings).values() if r
                for s in r.secrets} == {None, "r0", "r1"}
        # Step 2: re-encrypt; the services keep running.
        report = rotate(settings, BOTH)
        assert (report["endpoints"], report["current"], report["reencrypted"],
                report["plain"], report["failed"]) == (3, 1, 2, 1, {})
        records = latest_records(settings)
        assert all(key_id_of(s.secret) == "r1" for r in records.values() if r
                   for s in r.secrets)
        assert records[legacy.id].opened_secrets(NEW)[0].secret == plain_secret  # type: ignore[union-attr]
        again = rotate(settings, BOTH)  # idempotent
        assert (again["current"], again["reencrypted"]) == (3, 0)
        [event] = publish_events(settings, [make_event("acme", "order.created")])
        for path, secret in secrets.items():
            delivered(receiver, path, event.id, secret)

    # Step 3: the old key is retired; the services start without it and sign as before.
    with eventlog(settings, NEW) as api, fanout(settings, NEW):
        for path, secret in secrets.items():
            endpoint_id = {"/legacy": legacy.id, "/first": first["id"],
                           "/second": second["id"]}[path]
            shown = api.get(f"/v1/endpoints/{endpoint_id}/secret", headers=ACME)
            assert shown.json()["secrets"][0]["secret"] == secret, shown.text
        [event] = publish_events(settings, [make_event("acme", "order.created")])
        for path, secret in secrets.items():
            delivered(receiver, path, event.id, secret)

        # A record sealed with a key the fanout lacks (written by something still holding
        # only r0) is never signed with anything else: each attempt fails, nothing is sent.
        stale = legacy.model_copy(update={"id": new_endpoint_id(),
                                          "url": receiver.url("/stale")}).sealed(OLD)
        AckedProducer(settings.kafka).send(topics.endpoints, stale.to_json(),
                                           key=stale.id.encode())
        time.sleep(2)
        [event] = publish_events(settings, [make_event("acme", "order.created")])
        delivered(receiver, "/first", event.id, secrets["/first"])

        def first_attempt() -> AttemptRecord | None:
            return next((a for a in (AttemptRecord.from_json(m.value()) for m in
                                     read_to_end(settings, topics.attempts))
                         if a.endpoint_id == stale.id), None)
        attempt = eventually(first_attempt, timeout=30)
        assert attempt.error == "endpoint_misconfigured"
        assert "key id 'r0'" in (attempt.response_body or "")
        assert receiver.at("/stale") == []
        shown = eventually(lambda: next(
            (r for r in [api.get(f"/v1/endpoints/{stale.id}/secret", headers=ACME)]
             if r.status_code != 404), None))
        assert shown.status_code == 500 and "WEBHOOKS_SECRETS_KEY" in shown.json()["detail"]
        assert plain_secret not in shown.text

    # The command without the key such a record needs changes nothing and says why.
    lacking = rotate(settings, NEW, expect=1)
    assert lacking["failed"].keys() == {stale.id} and "r0" in lacking["failed"][stale.id]
    assert lacking["reencrypted"] == 0
    assert rotate(settings, BOTH)["reencrypted"] == 1


@pytest.mark.parametrize(("service", "keyring", "message"), [
    ("fanout", None, "fanout needs WEBHOOKS_SECRETS_KEY"),
    ("eventlog", None, "the eventlog API needs WEBHOOKS_SECRETS_KEY"),
    ("fanout", SecretsKeyring([("r9", b"\x09" * 32)]), "lacks key id(s) r0"),
    ("eventlog", SecretsKeyring([("r9", b"\x09" * 32)]), "lacks key id(s) r0"),
    ("fanout", IMPOSTOR, "key(s) r1 decrypt none of the endpoint secrets"),
    ("eventlog", IMPOSTOR, "key(s) r1 decrypt none of the endpoint secrets"),
], ids=["fanout-unset", "eventlog-unset", "fanout-missing", "eventlog-missing",
        "fanout-wrong", "eventlog-wrong"])
def test_a_service_without_the_right_key_refuses_to_start(
        settings: Settings, tmp_path: Path, service: str, keyring: SecretsKeyring | None,
        message: str) -> None:
    """Refused with one line naming the key ids, before it serves or signs anything."""
    topics = Topics.from_settings(settings)
    producer = AckedProducer(settings.kafka)
    now = utcnow()
    for sealing in (OLD, BOTH):  # one record under each key id
        endpoint = Endpoint(id=new_endpoint_id(), tenant="acme", url="https://example.com/h",
                            events=["*"], secrets=[EndpointSecret(secret=generate_secret())],
                            created=now, updated=now).sealed(sealing)
        producer.send(topics.endpoints, endpoint.to_json(), key=endpoint.id.encode())
    own_clickhouse = settings.model_copy(update={"clickhouse_url": f"chdb://{tmp_path}"})
    done = webhooks_command(own_clickhouse, keyring, "serve", service)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"Error: {service} refuses to start: " in done.stderr and message in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("change", ["described", "deleted"])
def test_a_change_made_between_the_read_and_the_write_is_written_again(
        settings: Settings, change: str) -> None:
    """The command's write is derived from the version it read; another writer's change in
    between would be undone by it, so that change is written again after it."""
    topic = Topics.from_settings(settings).endpoints
    producer = AckedProducer(settings.kafka)
    now = utcnow()
    endpoint = Endpoint(id=new_endpoint_id(), tenant="acme", url="https://example.com/h",
                        events=["*"], secrets=[EndpointSecret(secret=generate_secret())],
                        created=now, updated=now).sealed(OLD)
    producer.send(topic, endpoint.to_json(), key=endpoint.id.encode())
    records = EndpointRecords(settings.kafka, topic).start()
    try:
        assert records.wait_ready(30)
        base = records.snapshot()[endpoint.id]
        # The API changes the endpoint (or deletes it) just after the command's read...
        meanwhile = (endpoint.model_copy(update={"description": "changed meanwhile"})
                     .sealed(BOTH).to_json() if change == "described" else None)
        producer.send(topic, meanwhile, key=endpoint.id.encode())
        # ...and the command's write, derived from the older version, lands after it.
        ours = producer.send(topic, endpoint.sealed(BOTH).to_json(), key=endpoint.id.encode())
        again = rewrite_concurrent_changes(records, producer, BOTH, topic,
                                           [(endpoint.id, base, ours)], timeout=20)
    finally:
        records.stop()
        producer.close()
    assert again == 1
    latest = latest_records(settings)[endpoint.id]
    if change == "deleted":
        assert latest is None
    else:
        assert latest is not None and latest.description == "changed meanwhile"
        assert latest.secret_key_ids() == {"r1"}
        assert latest.opened_secrets(BOTH) == endpoint.opened_secrets(BOTH)


def test_the_command_seals_an_endpoint_s_tls_key_again(settings: Settings) -> None:
    """The client key of an endpoint's TLS material is one of its secrets: re-encrypted
    with the rest, for the same place, the certificate and CA bundle left as they are."""
    client = client_certificate(trustme.CA())
    now = utcnow()
    endpoint = Endpoint(id=new_endpoint_id(), tenant="acme", url="https://example.com/tls",
                        events=["*"], secrets=[EndpointSecret(secret=generate_secret())],
                        tls=EndpointTls(client_cert=client.cert, client_key=client.key),
                        created=now, updated=now).sealed(OLD)
    AckedProducer(settings.kafka).send(Topics.from_settings(settings).endpoints,
                                       endpoint.to_json(), key=endpoint.id.encode())
    report = rotate(settings, BOTH)
    assert endpoint.id not in report["failed"]
    latest = latest_records(settings)[endpoint.id]
    assert latest is not None and latest.tls is not None and latest.tls.client_key is not None
    assert latest.secret_key_ids() == {"r1"}
    assert NEW.open(tls_key_binding(endpoint.id), latest.tls.client_key) == client.key
    assert latest.tls.client_cert == client.cert and latest.tls.ca_bundle is None
