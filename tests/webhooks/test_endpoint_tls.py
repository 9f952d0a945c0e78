"""An endpoint's TLS key in the record: sealed like the signing secrets, for its own place,
and what the endpoint schema takes."""

from __future__ import annotations

import json

import pytest
import trustme

from tests.support.tls_material import ca_pem, client_certificate
from webhooks.endpoint_secrets import StoredRecord, census
from webhooks.endpoints import (
    Endpoint,
    EndpointSecret,
    EndpointTls,
    new_endpoint_id,
    tls_key_binding,
)
from webhooks.envelope import utcnow
from webhooks.json_schema import SchemaError
from webhooks.secret_encryption import SecretsKeyring, UndecryptableSecret, key_id_of
from webhooks.signing import generate_secret

OLD = SecretsKeyring([("k1", b"\x01" * 32)])
NEW = SecretsKeyring([("k2", b"\x02" * 32), ("k1", b"\x01" * 32)])


@pytest.fixture(scope="module")
def record() -> Endpoint:
    """An endpoint with a client certificate, its plain key and a CA bundle."""
    client = client_certificate(trustme.CA())
    now = utcnow()
    return Endpoint(id=new_endpoint_id(), tenant="acme", url="https://example.com/hook",
                    events=["*"], secrets=[EndpointSecret(secret=generate_secret())],
                    tls=EndpointTls(client_cert=client.cert, client_key=client.key,
                                    ca_bundle=ca_pem(trustme.CA())),
                    created=now, updated=now)


def test_the_tls_key_is_sealed_for_its_place_and_resealed_with_the_rest(
        record: Endpoint) -> None:
    assert record.tls is not None and record.tls.client_key is not None
    sealed = record.sealed(OLD)
    assert sealed.tls is not None and sealed.tls.client_key is not None
    assert key_id_of(sealed.tls.client_key) == "k1" and sealed.secret_key_ids() == {"k1"}
    assert (sealed.tls.client_cert, sealed.tls.ca_bundle) == (record.tls.client_cert,
                                                              record.tls.ca_bundle)
    assert OLD.open(tls_key_binding(record.id), sealed.tls.client_key) == record.tls.client_key
    with pytest.raises(UndecryptableSecret):  # not where a signing secret is
        OLD.open(record.id, sealed.tls.client_key)
    assert (tls_key_binding(record.id), sealed.tls.client_key) in sealed.stored_secrets()

    # What rotate-secrets-key does: every secret of the record moves to the first key.
    moved = sealed.sealed(NEW)
    assert moved.secret_key_ids() == {"k2"} and moved.sealed(NEW) is moved
    assert NEW.open(tls_key_binding(record.id), moved.tls.client_key) == record.tls.client_key  # type: ignore[union-attr, arg-type]
    # The start-up check counts the TLS key: a ring lacking k1 is told so.
    records = {record.id: StoredRecord(sealed.to_json(), 0, 0)}
    found = census(SecretsKeyring([("k2", b"\x02" * 32)]), records)
    assert found.missing == {"k1": 2}  # the signing secret and the TLS key
    assert census(OLD, records).opened == {"k1": 2}


def test_the_schema_takes_sealed_keys_only_and_records_without_tls(record: Endpoint) -> None:
    sealed = record.sealed(OLD)
    assert Endpoint.validated(sealed.to_json()) == sealed
    with pytest.raises(SchemaError, match="client_key"):
        Endpoint.validated(record.to_json())  # a plain key never goes into a record
    older = json.loads(sealed.to_json())
    del older["tls"]  # records written before endpoints had TLS material
    assert Endpoint.validated(json.dumps(older)).tls is None
    assert Endpoint.validated(sealed.model_copy(update={"tls": None}).to_json()).tls is None
