"""The registry's records and view, and how API keys resolve to principals (pure logic;
the admin API tests run the same against the real broker)."""

from __future__ import annotations

import logging
import time
from datetime import timedelta

import pytest

from webhooks.auth import ApiKeys, Principal
from webhooks.envelope import utcnow
from webhooks.kafka import KafkaConnection
from webhooks.problems import Problem
from webhooks.registry import (
    ApiKeyRecord,
    KeyUsage,
    Registry,
    Tenant,
    key_digest,
    new_api_key,
    new_key_id,
)

KEY = new_api_key()


def registry() -> Registry:
    return Registry(KafkaConnection(bootstrap="127.0.0.1:1"), "t.registry")


def key_record(tenant: str = "acme", scopes: list[str] | None = None,
               expires_in: float | None = None) -> ApiKeyRecord:
    now = utcnow()
    return ApiKeyRecord(id=new_key_id(), tenant=tenant, prefix=KEY[:12], sha256=key_digest(KEY),
                        scopes=scopes or ["read"], created=now,
                        expires=None if expires_in is None else now + timedelta(seconds=expires_in))


def tenant(tenant_id: str = "acme", **fields: object) -> Tenant:
    now = utcnow()
    return Tenant(id=tenant_id, created=now, updated=now, **fields)


def test_keys_are_random_and_kept_as_digests() -> None:
    assert KEY.startswith("whk_") and len(KEY) > 40
    assert new_api_key() != KEY
    assert key_digest(KEY) == key_digest(KEY) and len(key_digest(KEY)) == 64
    assert KEY not in key_record().to_json().decode()


def test_the_view_applies_tenants_keys_usage_and_tombstones() -> None:
    view = registry()
    record = key_record()
    view.apply_record(b"tenant/acme", tenant(name="Acme").to_json(), 0)
    view.apply_record(f"key/{record.id}".encode(), record.to_json(), 0)
    used = utcnow()
    view.apply_record(f"key-used/{record.id}".encode(), KeyUsage(last_used=used).to_json(), 0)
    assert view.tenant("acme").name == "Acme"
    assert view.key_by_digest(key_digest(KEY)) == record
    assert view.keys_of("acme") == [record]
    assert view.last_used(record.id) == used

    view.apply_record(f"key/{record.id}".encode(), None, 0)
    assert view.key_by_digest(key_digest(KEY)) is None and view.keys_of("acme") == []
    view.apply_record(b"tenant/acme", tenant(deleted=utcnow()).to_json(), 0)
    assert view.is_deleted("acme") and view.is_disabled("acme") and view.tenants() == []


def test_bad_records_are_skipped_and_logged_without_their_values(
        caplog: pytest.LogCaptureFixture) -> None:
    view = registry()
    caplog.set_level(logging.ERROR)
    view.apply_record(b"key/key_1", b'{"id": "key_1", "sha256": "secretish"}', 0)
    view.apply_record(b"tenant/x", b"not json", 0)
    view.apply_record(b"tenant/bad id", tenant("bad id").to_json(), 0)
    view.apply_record(None, b"{}", 0)
    view.apply_record(b"unknown/thing", b"{}", 0)
    assert view.tenants() == [] and view.key("key_1") is None
    assert "secretish" not in caplog.text
    assert caplog.text.count("skipping") == 3


def test_a_managed_key_resolves_to_its_tenant_and_scopes() -> None:
    view = registry()
    record = key_record(scopes=["read", "publish"])
    view.put_key(record)
    found = ApiKeys({}, view).lookup(KEY)
    assert found == Principal("acme", frozenset({"read", "publish"}), record.id)
    assert found.allows("read") and not found.allows("manage") and not found.is_admin
    with pytest.raises(Problem) as refused:
        found.require("manage")
    assert refused.value.status == 403 and "'manage'" in refused.value.detail
    assert ApiKeys({}, view).lookup(KEY + "x") is None
    assert view.last_used(record.id) is not None  # noted for the next write-back


def test_bootstrap_keys_hold_the_tenant_scopes_or_all_for_admin() -> None:
    keys = ApiKeys({"k-acme": "acme", "k-admin": "*"}, registry())
    acme = keys.lookup("k-acme")
    assert acme is not None and acme.allows("publish") and acme.allows("manage")
    assert not acme.allows("admin") and not acme.is_admin
    admin = keys.lookup("k-admin")
    assert admin is not None and admin.is_admin and admin.allows("read")


def test_expired_keys_and_keys_of_erased_tenants_are_refused() -> None:
    view = registry()
    view.put_key(key_record(expires_in=-1))
    assert ApiKeys({}, view).lookup(KEY) is None
    view.put_key(key_record())
    assert ApiKeys({"k-acme": "acme"}, view).lookup(KEY) is not None
    view.put_tenant(tenant(deleted=utcnow()))
    assert ApiKeys({"k-acme": "acme"}, view).lookup(KEY) is None
    assert ApiKeys({"k-acme": "acme"}, view).lookup("k-acme") is None


def test_usage_is_written_back_at_most_once_a_minute_per_key() -> None:
    written: list[tuple[bytes | None, bytes | None]] = []

    class Writer:
        def produce(self, topic: str, value: bytes | None, *, key: bytes | None = None) -> None:
            written.append((key, value))

    view = registry()
    view.writer = Writer()
    record = key_record()
    view.put_key(record)
    view.mark_used(record.id, time.time())
    view.after_poll()
    assert [key for key, _ in written] == [f"key-used/{record.id}".encode()]
    view.mark_used(record.id, time.time() + 30)  # within the minute: not noted again
    view._next_usage_flush = 0.0
    view.after_poll()
    assert len(written) == 1
