"""Dashboard sessions: a signed cookie naming the tenant, and the CSRF token bound to it.

The cookie never holds the API key. It holds ``{tenant, key digest, nonce, expiry}``
with an HMAC over it, keyed by material derived from the settings like the cursor key
(``WEBHOOKS_CURSOR_SECRET``, else the API keys), so every eventlog replica accepts it.
The key digest ties a session to the key it was opened with: removing that key from
``WEBHOOKS_API_KEYS`` ends its sessions at their next request.

The CSRF token is an HMAC of the session's nonce: each session has its own, no server
state is needed, and it is compared in constant time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

from webhooks.settings import ADMIN_TENANT, Settings

SESSION_COOKIE = "webhooks_dashboard"
SIGN_IN_COOKIE = "webhooks_dashboard_sign_in"  # double-submit token of the sign-in form
SESSION_SECONDS = 12 * 3600


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def key_digest(api_key: str) -> str:
    """A short digest naming an API key without revealing it."""
    return hashlib.sha256(b"webhooks-dashboard-key\0" + api_key.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Session:
    """A signed-in browser: the tenant it acts for and its CSRF token."""

    tenant: str
    key: str  # digest of the API key it signed in with (key_digest)
    nonce: str
    expires: int
    csrf_token: str


class SessionSigner:
    """Issues and checks session cookies and CSRF tokens for one app's settings."""

    def __init__(self, settings: Settings) -> None:
        material = settings.cursor_secret or json.dumps(sorted(settings.api_keys.items()))
        self._key = hashlib.sha256(b"webhooks-dashboard\0" + material.encode()).digest()
        # digest -> tenant; comparing digests of keys, never the keys, in the cookie path
        self._tenants = {key_digest(key): tenant for key, tenant in settings.api_keys.items()}

    def _mac(self, purpose: bytes, payload: bytes) -> bytes:
        return hmac.new(self._key, purpose + b"\0" + payload, hashlib.sha256).digest()

    def issue(self, api_key: str, tenant: str) -> str:
        """The cookie value of a new session of ``tenant``, opened with ``api_key``."""
        document = {"t": tenant, "k": key_digest(api_key), "n": secrets.token_urlsafe(16),
                    "e": int(time.time()) + SESSION_SECONDS}
        payload = json.dumps(document, separators=(",", ":")).encode()
        return f"{_b64(payload)}.{_b64(self._mac(b'session', payload))}"

    def open(self, token: str | None) -> Session | None:
        """The session ``token`` stands for; None if absent, forged, expired or its key
        was removed from the configuration since."""
        if not token or len(token) > 1024:
            return None
        body, dot, mac_text = token.partition(".")
        try:
            payload, mac = _unb64(body), _unb64(mac_text)
        except (binascii.Error, ValueError):
            return None
        if not dot or not hmac.compare_digest(self._mac(b"session", payload), mac):
            return None
        try:
            document = json.loads(payload)
            tenant, key, nonce, expires = (str(document["t"]), str(document["k"]),
                                           str(document["n"]), int(document["e"]))
        except (ValueError, KeyError, TypeError):
            return None
        if expires < time.time():
            return None
        configured = self._tenants.get(key)
        if configured is None or configured not in (tenant, ADMIN_TENANT):
            return None
        return Session(tenant=tenant, key=key, nonce=nonce, expires=expires,
                       csrf_token=self.csrf_token(nonce))

    def csrf_token(self, nonce: str) -> str:
        """The CSRF token of the session (or sign-in form) with ``nonce``."""
        return _b64(self._mac(b"csrf", nonce.encode())[:24])

    def csrf_valid(self, nonce: str, presented: str | None) -> bool:
        """True when ``presented`` is the CSRF token for ``nonce`` (constant time)."""
        return bool(presented) and hmac.compare_digest(self.csrf_token(nonce).encode(),
                                                       (presented or "").encode())

    def tenant_of(self, api_key: str) -> str | None:
        """The tenant (or ``*`` for an admin) of ``api_key``, or None."""
        found = None
        digest = key_digest(api_key)
        for known, tenant in self._tenants.items():
            if hmac.compare_digest(known, digest):
                found = tenant
        return found
