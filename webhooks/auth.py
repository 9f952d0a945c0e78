"""API keys: ``Authorization: Bearer <key>`` maps to a tenant (or the admin role) and scopes.

Two sources of keys:

- bootstrap keys from ``WEBHOOKS_API_KEYS`` (``key:tenant``, ``*`` for admin), read at
  start-up: a tenant's key holds the tenant scopes (publish, read, manage), an admin's
  every scope;
- managed keys from the registry (:mod:`webhooks.registry`), created and revoked through
  the admin API while the services run, each with the scopes it was given.

A scope says what a key may do: ``publish`` events (ingest), ``read`` the event log,
attempts, DLQ and stream, ``manage`` endpoints and redeliveries, ``admin`` everything,
for every tenant. Admin implies the other three.
"""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass

from fastapi import Request

from webhooks.problems import Problem
from webhooks.registry import (
    ADMIN,
    SCOPES,
    TENANT_SCOPES,
    ApiKeyRecord,
    Registry,
    key_digest,
)
from webhooks.settings import ADMIN_TENANT


@dataclass(frozen=True)
class Principal:
    """Who is calling: a tenant, or an admin who may act for any tenant; with the key's
    scopes and, for a managed key, its id."""

    tenant: str
    scopes: frozenset[str] = frozenset(TENANT_SCOPES)
    key_id: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.tenant == ADMIN_TENANT and ADMIN in self.scopes

    def allows(self, scope: str) -> bool:
        """True if the key holds ``scope`` (admin holds every scope)."""
        return scope in self.scopes or ADMIN in self.scopes

    def require(self, scope: str) -> Principal:
        """This principal, or a 403 problem naming the scope its key lacks."""
        if not self.allows(scope):
            raise Problem(403, f"this API key lacks the '{scope}' scope", code="missing_scope")
        return self


def bootstrap_principal(tenant: str) -> Principal:
    """The principal of a ``WEBHOOKS_API_KEYS`` key of ``tenant`` (``*``: admin)."""
    scopes = SCOPES if tenant == ADMIN_TENANT else TENANT_SCOPES
    return Principal(tenant, frozenset(scopes))


class ApiKeys:
    """The bootstrap keys and, when given, the registry's managed keys.

    A bootstrap key is compared in constant time against every configured key; a managed
    key is found by its SHA-256 (a dict hit: the digest of a guess tells nothing about
    the keys). A key of an erased tenant is refused, whatever its source.
    """

    def __init__(self, keys: dict[str, str], registry: Registry | None = None) -> None:
        self._keys = [(key.encode(), bootstrap_principal(tenant)) for key, tenant in keys.items()]
        self.registry = registry
        # The principal of each managed key, built once per version of its record.
        self._principals: dict[str, tuple[ApiKeyRecord, Principal]] = {}

    def lookup(self, presented: str) -> Principal | None:
        """Whose key ``presented`` is, or None (unknown, revoked, expired, tenant erased)."""
        found = None
        encoded = presented.encode()
        for key, principal in self._keys:
            if hmac.compare_digest(key, encoded):
                found = principal
        registry = self.registry
        if registry is None:
            return found
        if found is None:
            found = self._managed(registry, presented)
        if found is not None and registry.is_deleted(found.tenant):
            return None
        return found

    def _managed(self, registry: Registry, presented: str) -> Principal | None:
        record = registry.key_by_digest(key_digest(presented))
        if record is None:
            return None
        now = time.time()
        if record.expired(now):
            return None
        registry.mark_used(record.id, now)
        cached = self._principals.get(record.id)
        if cached is None or cached[0] is not record:
            cached = (record, Principal(record.tenant, frozenset(record.scopes), record.id))
            self._principals[record.id] = cached
        return cached[1]

    def still_valid(self, principal: Principal) -> bool:
        """False once the principal's managed key was revoked or expired, or its tenant
        erased: long-lived requests (the event stream) re-check with this."""
        registry = self.registry
        if registry is None:
            return True
        if registry.is_deleted(principal.tenant):
            return False
        if principal.key_id is None:
            return True
        record = registry.key(principal.key_id)
        return record is not None and not record.expired(time.time())

    def authenticate(self, request: Request) -> Principal:
        """The caller of ``request``; a 401 problem unless it presents a valid key."""
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        principal = self.lookup(token.strip()) if scheme.lower() == "bearer" else None
        if principal is None:
            raise Problem(401, "missing or invalid API key (Authorization: Bearer <key>)",
                          headers={"WWW-Authenticate": "Bearer"})
        return principal


async def authenticate(request: Request) -> Principal:
    """FastAPI dependency: the caller, by the keys of the app serving ``request``
    (``app.state.api_keys``, set by each service's ``create_app``); 401 without a valid key."""
    api_keys: ApiKeys = request.app.state.api_keys
    return api_keys.authenticate(request)
