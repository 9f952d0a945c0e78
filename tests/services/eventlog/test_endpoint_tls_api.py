"""An endpoint's TLS material through the endpoints API: checked where it enters (a 422
naming the field, and nothing changed), kept with the key sealed, never shown again."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
import trustme
from cryptography.hazmat.primitives import serialization
from fastapi.testclient import TestClient

from tests.services.eventlog.test_endpoints_api import Tenant, endpoint_records
from tests.support.tls_material import ClientCertificate, ca_pem, client_certificate
from webhooks.endpoint_tls import MAX_KEY_PEM
from webhooks.endpoints import MASKED, Endpoint, tls_key_binding
from webhooks.secret_encryption import UndecryptableSecret
from webhooks.settings import Settings

URL = "https://hooks.example.com/mtls"


@pytest.fixture(scope="module")
def client(clients_ca: trustme.CA) -> ClientCertificate:
    return client_certificate(clients_ca)


@pytest.fixture(scope="module")
def bundle() -> str:
    return ca_pem(trustme.CA())


def key_forms(key_pem: str) -> list[str]:
    """The key as sent, and each line of its base64 body (any of them would give it away)."""
    return [key_pem.strip(), *(line for line in key_pem.splitlines() if "-----" not in line)]


def test_the_material_is_kept_with_the_key_sealed_and_never_shown(
        api: TestClient, settings: Settings, client: ClientCertificate, bundle: str) -> None:
    tenant = Tenant(api)
    created = tenant.call("POST", "/v1/endpoints", json={
        "url": URL, "events": ["*"],
        "tls": {"client_cert": client.cert, "client_key": client.key, "ca_bundle": bundle}})
    assert created.status_code == 201, created.text
    shown = {"client_cert": client.cert, "client_key": MASKED, "ca_bundle": bundle}
    assert created.json()["tls"] == shown
    endpoint_id = created.json()["id"]
    answers = [created.text, tenant.call("GET", f"/v1/endpoints/{endpoint_id}").text,
               tenant.call("GET", "/v1/endpoints").text]
    assert json.loads(answers[1])["tls"] == shown
    assert json.loads(answers[2])["data"][0]["tls"] == shown
    assert not [form for form in key_forms(client.key) for answer in answers if form in answer]

    # On the topic: the key sealed for this endpoint's TLS key, and only there.
    [message] = endpoint_records(settings, endpoint_id, 1)
    record = Endpoint.from_json(message.value())
    assert record.tls is not None and record.tls.client_key is not None
    assert record.tls.client_key.startswith("whenc_v1.t1.")
    assert not [form for form in key_forms(client.key) if form.encode() in message.value()]
    keyring = settings.secrets_key
    assert keyring is not None
    assert keyring.open(tls_key_binding(endpoint_id), record.tls.client_key) == client.key
    with pytest.raises(UndecryptableSecret):
        keyring.open(endpoint_id, record.tls.client_key)  # not as a signing secret


def encrypted(key_pem: str) -> str:
    key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.BestAvailableEncryption(b"passphrase")).decode()


def expired(authority: trustme.CA) -> ClientCertificate:
    leaf = authority.issue_cert("old.client.test", not_before=datetime(2020, 1, 1, tzinfo=UTC),
                                not_after=datetime(2021, 1, 1, tzinfo=UTC))
    return ClientCertificate(cert=leaf.cert_chain_pems[0].bytes().decode(),
                             key=leaf.private_key_pem.bytes().decode())


def bad_material(client: ClientCertificate, other: ClientCertificate,
                 old: ClientCertificate) -> dict[str, tuple[dict[str, Any], str]]:
    """Name -> (the tls object sent, what the 422 must say)."""
    return {
        "key of another certificate": (
            {"client_cert": client.cert, "client_key": other.key},
            "tls: Value error, client_key: does not belong to client_cert"),
        "not a certificate": (
            {"client_cert": "-----BEGIN CERTIFICATE-----\nbm9wZQ==\n-----END CERTIFICATE-----",
             "client_key": client.key},
            "tls: Value error, client_cert: is not a valid PEM certificate"),
        "not PEM": ({"client_cert": "MIIB", "client_key": client.key},
                    "tls: Value error, client_cert: must be PEM"),
        "not a key": ({"client_cert": client.cert, "client_key": "-----BEGIN PRIVATE KEY-----"},
                      "tls: Value error, client_key: is not a valid PEM private key"),
        "encrypted key": ({"client_cert": client.cert, "client_key": encrypted(client.key)},
                          "tls: Value error, client_key: is encrypted"),
        "certificate without key": ({"client_cert": client.cert},
                                    "tls: Value error, client_key: client_cert and client_key "
                                    "go together"),
        "expired certificate": ({"client_cert": old.cert, "client_key": old.key},
                                "tls: Value error, client_cert: has expired"),
        "oversized key": ({"client_cert": client.cert, "client_key": "x" * (MAX_KEY_PEM + 1)},
                          "tls.client_key: String should have at most 16384 characters"),
        "bad CA bundle": ({"ca_bundle": "-----BEGIN CERTIFICATE-----\n!!\n"},
                          "tls: Value error, ca_bundle: is not a valid PEM certificate"),
        "key pasted with the certificate": (
            {"client_cert": client.cert + client.key, "client_key": client.key},
            "tls: Value error, client_cert: holds a private key"),
        "nothing": ({}, "tls: Value error, give client_cert and client_key, or ca_bundle"),
        "an unknown field": ({"ca_bundle": "x", "password": "pw"},
                             "tls.password: Extra inputs are not permitted"),
    }


def test_bad_material_is_a_422_naming_the_field_and_changes_nothing(
        api: TestClient, client: ClientCertificate, clients_ca: trustme.CA, bundle: str
        ) -> None:
    tenant = Tenant(api)
    kept = tenant.endpoint(["*"], url=URL, tls={"ca_bundle": bundle})
    before = tenant.call("GET", f"/v1/endpoints/{kept['id']}").json()
    cases = bad_material(client, client_certificate(clients_ca, "other"), expired(clients_ca))
    cases["tls with an http url"] = ({"ca_bundle": bundle},
                                     "tls: TLS material needs an https url")
    for name, (tls, expected) in cases.items():
        url = "http://hooks.example.com/in" if "http url" in name else URL
        answers = [tenant.call("POST", "/v1/endpoints",
                               json={"url": url, "events": ["*"], "tls": tls}),
                   tenant.call("PATCH", f"/v1/endpoints/{kept['id']}",
                               json={"url": url, "tls": tls})]
        for answer in answers:
            assert answer.status_code == 422, (name, answer.text)
            assert expected in answer.json()["detail"], (name, answer.json()["detail"])
            assert not [form for form in key_forms(client.key) if form in answer.text], name
    # The change of the url alone to http is refused too while TLS material is kept.
    refused = tenant.call("PATCH", f"/v1/endpoints/{kept['id']}",
                          json={"url": "http://hooks.example.com/in"})
    assert refused.status_code == 422 and "needs an https url" in refused.json()["detail"]
    assert [e["id"] for e in tenant.call("GET", "/v1/endpoints").json()["data"]] == [kept["id"]]
    assert tenant.call("GET", f"/v1/endpoints/{kept['id']}").json() == before


def test_a_patch_replaces_keeps_or_removes_the_material(
        api: TestClient, settings: Settings, client: ClientCertificate, clients_ca: trustme.CA,
        bundle: str) -> None:
    tenant = Tenant(api)
    created = tenant.endpoint(["*"], url=URL, tls={"client_cert": client.cert,
                                                   "client_key": client.key})
    path = f"/v1/endpoints/{created['id']}"
    renewed = client_certificate(clients_ca, "renewed")
    replaced = tenant.call("PATCH", path, json={"tls": {
        "client_cert": renewed.cert, "client_key": renewed.key, "ca_bundle": bundle}})
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["tls"] == {"client_cert": renewed.cert, "client_key": MASKED,
                                      "ca_bundle": bundle}
    # Another field changes: the material stays as it was, the same sealed key included.
    described = tenant.call("PATCH", path, json={"description": "mutual TLS"})
    assert described.json()["tls"] == replaced.json()["tls"]
    records = [Endpoint.from_json(m.value()) for m in endpoint_records(settings, created["id"], 3)]
    keyring = settings.secrets_key
    assert keyring is not None
    assert [keyring.open(tls_key_binding(r.id), r.tls.client_key)  # type: ignore[union-attr, arg-type]
            for r in records] == [client.key, renewed.key, renewed.key]
    assert records[1].tls == records[2].tls

    removed = tenant.call("PATCH", path, json={"tls": None})
    assert removed.status_code == 200 and removed.json()["tls"] is None
    assert tenant.call("GET", path).json()["tls"] is None


def test_a_replayed_create_does_not_show_the_key_either(
        api: TestClient, client: ClientCertificate) -> None:
    tenant = Tenant(api)
    body = {"url": URL, "events": ["*"],
            "tls": {"client_cert": client.cert, "client_key": client.key}}
    first = tenant.call("POST", "/v1/endpoints", json=body, headers={"Idempotency-Key": "k1"})
    again = tenant.call("POST", "/v1/endpoints", json=body, headers={"Idempotency-Key": "k1"})
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["tls"]["client_key"] == MASKED
    assert not [form for form in key_forms(client.key) if form in again.text]
