"""The tenant and API-key registry: records on one compacted topic, followed by every replica.

Tenants and managed API keys are data, not configuration: the eventlog's admin API writes
them to ``<prefix>.registry`` (compacted, kept for good) and every replica of every
service follows that topic from the beginning (:class:`Registry`), so a key created or
revoked works or stops working everywhere within a fetch, without a restart.

The topic holds three kinds of record, told apart by the key's prefix:

- ``tenant/<id>``: a :class:`Tenant` (name, metadata, disabled). An erased tenant keeps a
  record with ``deleted`` set, so that every replica goes on refusing it and the fanout
  drops what is still in flight for it.
- ``key/<id>``: an :class:`ApiKeyRecord`, the key's SHA-256 and never the key itself. A
  tombstone revokes it.
- ``key-used/<id>``: when the key was last used (:class:`KeyUsage`), approximate: each
  replica writes it at most once per :data:`USAGE_RESOLUTION` per key.

Keys are 32 random bytes, so a plain SHA-256 is as good as a slow KDF against guessing,
and checking one is a hash and a dict hit (:meth:`Registry.key_by_digest`).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import ClassVar, Protocol, Self

from pydantic import Field
from ulid import ULID

from webhooks.compacted_topic import CompactedTopicFollower
from webhooks.envelope import Timestamp
from webhooks.json_schema import SchemaError
from webhooks.kafka import KafkaConnection
from webhooks.record import JsonRecord

log = logging.getLogger(__name__)

PUBLISH, READ, MANAGE, ADMIN = "publish", "read", "manage", "admin"
SCOPES = (PUBLISH, READ, MANAGE, ADMIN)
# What a tenant key may hold, and what one from WEBHOOKS_API_KEYS holds.
TENANT_SCOPES = (PUBLISH, READ, MANAGE)

KEY_PREFIX = "whk_"
# How many characters of a key are kept to recognise it in a listing.
SHOWN_PREFIX_LENGTH = 12
# Last-used times are written at most this often per key and replica.
USAGE_RESOLUTION = timedelta(seconds=60)

TENANT_RECORD, KEY_RECORD, USAGE_RECORD = "tenant/", "key/", "key-used/"


def new_api_key() -> str:
    """A fresh secret key: ``whk_`` and 32 random bytes, URL-safe base64."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def key_digest(key: str) -> str:
    """The SHA-256 of ``key`` (hex): what the registry keeps, and how a key is looked up."""
    return hashlib.sha256(key.encode()).hexdigest()


def new_key_id() -> str:
    """A unique key id: ``key_`` and a ULID (not secret: it names the key in listings)."""
    return f"key_{ULID()}"


class Tenant(JsonRecord):
    """One customer of the platform."""

    schema_name: ClassVar[str | None] = "tenant.v1"

    id: str
    name: str = ""
    metadata: dict[str, str] = Field(default_factory=dict)
    disabled: bool = False
    deleted: Timestamp | None = None
    created: Timestamp
    updated: Timestamp

    @classmethod
    def from_json(cls, raw: bytes | str) -> Self:
        """Checked against ``tenant.v1``: the topic keeps records of every writer for good."""
        return cls.validated(raw)


class ApiKeyRecord(JsonRecord):
    """A managed API key as the registry keeps it: its digest, never the key."""

    schema_name: ClassVar[str | None] = "api_key.v1"

    id: str
    tenant: str
    prefix: str
    sha256: str
    scopes: list[str]
    description: str = ""
    created: Timestamp
    expires: Timestamp | None = None

    @classmethod
    def from_json(cls, raw: bytes | str) -> Self:
        """Checked against ``api_key.v1``."""
        return cls.validated(raw)

    def expired(self, now: float) -> bool:
        """True once the key's expiry has passed (``now`` in epoch seconds: the hot path
        has ``time.time()`` at hand)."""
        return self.expires is not None and self.expires.timestamp() <= now


class KeyUsage(JsonRecord):
    """When a key was last used, as one replica saw it."""

    last_used: Timestamp


class RegistryWriter(Protocol):
    """What the registry needs to write usage records: a producer that takes one write."""

    def produce(self, topic: str, value: bytes | None, *, key: bytes | None = None) -> object:
        """Queue one record."""
        ...


class Registry(CompactedTopicFollower):
    """Tenant id -> :class:`Tenant` and key digest -> :class:`ApiKeyRecord`, kept current
    by a background thread following the registry topic.

    Readers get dict hits without locks (a dict is swapped or updated atomically under the
    GIL). With a ``writer``, the keys this replica saw used are written back as
    ``key-used/`` records from the follower thread, at most once per minute per key.
    """

    thread_name = "registry"
    # A revoked key must stop working quickly; an idle fetch costs the broker little.
    fetch_wait_ms: ClassVar[int] = 100
    stop_timeout = 5.0

    def __init__(self, connection: KafkaConnection, topic: str,
                 writer: RegistryWriter | None = None) -> None:
        super().__init__(connection, topic)
        self.writer = writer
        self._tenants: dict[str, Tenant] = {}
        self._keys: dict[str, ApiKeyRecord] = {}
        self._by_digest: dict[str, ApiKeyRecord] = {}
        self._last_used: dict[str, datetime] = {}
        self._used_here: dict[str, datetime] = {}  # by this replica, not yet written
        self._noted: dict[str, float] = {}  # when this replica last noted a use, per key
        self._lock = threading.Lock()
        self._next_usage_flush = 0.0

    # -- reading -------------------------------------------------------------------

    def tenant(self, tenant_id: str) -> Tenant | None:
        """The tenant's record (erased ones too, with ``deleted`` set), or None."""
        return self._tenants.get(tenant_id)

    def tenants(self) -> list[Tenant]:
        """Every tenant that was not erased, by id."""
        return sorted((t for t in list(self._tenants.values()) if t.deleted is None),
                      key=lambda t: t.id)

    def is_deleted(self, tenant_id: str) -> bool:
        """True if the tenant was erased."""
        tenant = self._tenants.get(tenant_id)
        return tenant is not None and tenant.deleted is not None

    def is_disabled(self, tenant_id: str) -> bool:
        """True if the tenant is disabled (or erased): its events are refused at ingest."""
        tenant = self._tenants.get(tenant_id)
        return tenant is not None and (tenant.disabled or tenant.deleted is not None)

    def key(self, key_id: str) -> ApiKeyRecord | None:
        """The key's record, or None if unknown or revoked."""
        return self._keys.get(key_id)

    def key_by_digest(self, digest: str) -> ApiKeyRecord | None:
        """The key whose SHA-256 is ``digest``, or None."""
        return self._by_digest.get(digest)

    def keys_of(self, tenant_id: str) -> list[ApiKeyRecord]:
        """The tenant's keys, oldest first."""
        return sorted((k for k in list(self._keys.values()) if k.tenant == tenant_id),
                      key=lambda k: k.id)

    def last_used(self, key_id: str) -> datetime | None:
        """When the key was last used, approximately (within a minute or two)."""
        here = self._used_here.get(key_id)
        there = self._last_used.get(key_id)
        if here is None or there is None:
            return here or there
        return max(here, there)

    def mark_used(self, key_id: str, now: float) -> None:
        """Note a use of the key at ``now`` (epoch seconds; written back later by the
        follower thread). Costs a dict hit: most uses fall within the resolution."""
        if now - self._noted.get(key_id, 0.0) >= USAGE_RESOLUTION.total_seconds():
            self._noted[key_id] = now
            self._used_here[key_id] = datetime.fromtimestamp(now, UTC)

    # -- writing -------------------------------------------------------------------

    def put_tenant(self, tenant: Tenant) -> None:
        """Store ``tenant`` (also the writer's own write, applied at once)."""
        self._tenants[tenant.id] = tenant

    def put_key(self, record: ApiKeyRecord) -> None:
        """Store ``record`` (also the writer's own write, applied at once)."""
        with self._lock:
            previous = self._keys.get(record.id)
            if previous is not None:
                self._by_digest.pop(previous.sha256, None)
            self._keys[record.id] = record
            self._by_digest[record.sha256] = record

    def remove_key(self, key_id: str) -> None:
        """Forget the key (a revocation, also the writer's own, applied at once)."""
        with self._lock:
            previous = self._keys.pop(key_id, None)
            if previous is not None:
                self._by_digest.pop(previous.sha256, None)
            self._last_used.pop(key_id, None)
            self._used_here.pop(key_id, None)

    # -- following the topic ---------------------------------------------------------

    def reset(self, partitions: int) -> None:
        with self._lock:
            self._tenants, self._keys, self._by_digest = {}, {}, {}
            self._last_used = {}

    def apply_record(self, key: bytes | None, value: bytes | None, timestamp_ms: int) -> None:
        """Apply one record of the registry topic; bad ones are logged (by field) and skipped."""
        if key is None:
            return
        name = key.decode(errors="replace")
        kind, _, ident = name.partition("/")
        try:
            if kind + "/" == TENANT_RECORD:
                self._apply_tenant(ident, value)
            elif kind + "/" == KEY_RECORD:
                if value is None:
                    self.remove_key(ident)
                else:
                    self.put_key(ApiKeyRecord.from_json(value))
            elif kind + "/" == USAGE_RECORD:
                if value is None:
                    self._last_used.pop(ident, None)
                else:
                    used = KeyUsage.from_json(value).last_used
                    previous = self._last_used.get(ident)
                    self._last_used[ident] = used if previous is None else max(used, previous)
        except SchemaError as exc:
            log.error("skipping invalid registry record %s: invalid %s", name,
                      ", ".join(exc.fields))
        except ValueError as exc:
            log.error("skipping unreadable registry record %s: %s", name, type(exc).__name__)

    def _apply_tenant(self, tenant_id: str, value: bytes | None) -> None:
        if value is None:
            self._tenants.pop(tenant_id, None)
        else:
            self.put_tenant(Tenant.from_json(value))

    def after_poll(self) -> None:
        """Write the last-used times this replica noted (at most every few seconds)."""
        writer = self.writer
        if writer is None or not self._used_here or time.monotonic() < self._next_usage_flush:
            return
        self._next_usage_flush = time.monotonic() + 5.0
        used, self._used_here = self._used_here, {}
        for key_id, moment in used.items():
            if key_id not in self._keys:
                continue  # revoked meanwhile
            self._last_used[key_id] = max(moment, self._last_used.get(key_id, moment))
            try:
                writer.produce(self.topic, KeyUsage(last_used=moment).to_json(),
                                     key=f"{USAGE_RECORD}{key_id}".encode())
            except Exception as exc:  # approximate data: a lost write costs nothing
                log.warning("could not record the use of key %s: %s", key_id, exc)
