"""API keys: ``Authorization: Bearer <key>`` maps to a tenant or to the admin role."""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from fastapi import Request

from webhooks.problems import Problem
from webhooks.settings import ADMIN_TENANT


@dataclass(frozen=True)
class Principal:
    """Who is calling: a tenant, or an admin who may act for any tenant."""

    tenant: str

    @property
    def is_admin(self) -> bool:
        return self.tenant == ADMIN_TENANT


class ApiKeys:
    """The configured keys; lookups compare every key in constant time."""

    def __init__(self, keys: dict[str, str]) -> None:
        self._keys = [(key.encode(), tenant) for key, tenant in keys.items()]

    def lookup(self, presented: str) -> Principal | None:
        """Whose key ``presented`` is, or None."""
        found = None
        for key, tenant in self._keys:
            if hmac.compare_digest(key, presented.encode()):
                found = Principal(tenant)
        return found

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
