"""Dashboard sessions and sign-in links: signed documents naming a tenant, never a key.

A session cookie holds ``{tenant, how it was opened, nonce, expiry}`` with an HMAC over
it; a sign-in link's token holds ``{tenant, scopes, nonce, expiry}``. Both are keyed by
material derived from the settings like the cursor key (``WEBHOOKS_CURSOR_SECRET``, else
the bootstrap API keys), so every eventlog replica issues and accepts them; each kind has
its own MAC purpose, so neither passes for the other.

A session opened with an API key names that key without revealing it: a managed key by
its id, a bootstrap key (``WEBHOOKS_API_KEYS``) by a digest. Every request checks the key
again (:meth:`SessionSigner.open`): a revoked or expired managed key, a bootstrap key
removed from the configuration, or an erased tenant ends the session there. The session's
scopes are the key's, as they are now. A session opened with a link (an admin handed it
to the tenant) holds the link's scopes and ends with the link's expiry at the latest, or
when the tenant is erased.

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
from typing import Any

from webhooks.auth import Principal, bootstrap_principal
from webhooks.registry import ADMIN, MANAGE, READ, Registry
from webhooks.settings import ADMIN_TENANT, Settings

SESSION_COOKIE = "webhooks_dashboard"
SIGN_IN_COOKIE = "webhooks_dashboard_sign_in"  # double-submit token of the sign-in form
SESSION_SECONDS = 12 * 3600
# Sign-in links: what an admin may ask for, and what one holds.
LINK_SECONDS_DEFAULT = 3600
LINK_SECONDS_MAX = 24 * 3600
LINK_SCOPES = (READ, MANAGE)
# Longest signed document accepted (a cookie or a link's token).
MAX_TOKEN_LENGTH = 1024

# How a session was opened (the cookie's "v"): a bootstrap key, a managed key, a link.
BOOTSTRAP, MANAGED, LINK = "b", "m", "l"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def key_digest(api_key: str) -> str:
    """A short digest naming a bootstrap API key without revealing it."""
    return hashlib.sha256(b"webhooks-dashboard-key\0" + api_key.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Session:
    """A signed-in browser: the tenant it acts for, what it may do, its CSRF token."""

    tenant: str
    via: str  # BOOTSTRAP, MANAGED or LINK
    key: str  # the managed key's id, the bootstrap key's digest (key_digest), or ""
    scopes: frozenset[str]
    nonce: str
    expires: int
    csrf_token: str

    def allows(self, scope: str) -> bool:
        """True if the session holds ``scope`` (an admin's holds every scope)."""
        return scope in self.scopes or ADMIN in self.scopes

    @property
    def can_manage(self) -> bool:
        """True if the session may change things (the ``manage`` scope)."""
        return self.allows(MANAGE)


@dataclass(frozen=True)
class LinkGrant:
    """What a valid sign-in link grants: a session of ``tenant`` until ``expires``."""

    tenant: str
    scopes: frozenset[str]
    expires: int


class LinkRefused(Exception):
    """A sign-in link that opens nothing; the message says why, for the person holding it."""


class NotConfigured(Exception):
    """Sessions and links need secret key material, and the settings give none."""

    def __init__(self) -> None:
        super().__init__(
            "dashboard sessions and sign-in links need a secret: set WEBHOOKS_CURSOR_SECRET "
            "(the same on every eventlog replica)")


class SessionSigner:
    """Issues and checks session cookies, sign-in links and CSRF tokens for one app.

    ``registry`` (the app's tenant and key registry) is where managed keys and erased
    tenants are looked up at every request; without it only bootstrap keys sign in.
    """

    def __init__(self, settings: Settings, registry: Registry | None = None) -> None:
        material = settings.cursor_secret or (
            json.dumps(sorted(settings.api_keys.items())) if settings.api_keys else "")
        # Without a cursor secret or bootstrap keys there is nothing secret to key the MAC
        # with: anyone could forge a session. Then nothing is issued or accepted.
        self._key = (hashlib.sha256(b"webhooks-dashboard\0" + material.encode()).digest()
                     if material else None)
        self.registry = registry
        # digest -> tenant; comparing digests of keys, never the keys, in the cookie path
        self._bootstrap = {key_digest(key): tenant for key, tenant in settings.api_keys.items()}

    @property
    def configured(self) -> bool:
        """True if sessions and links can be issued (there is secret key material)."""
        return self._key is not None

    # -- signed documents -----------------------------------------------------------

    def _mac(self, purpose: bytes, payload: bytes) -> bytes:
        if self._key is None:
            raise NotConfigured
        return hmac.new(self._key, purpose + b"\0" + payload, hashlib.sha256).digest()

    def _seal(self, purpose: bytes, document: dict[str, Any]) -> str:
        payload = json.dumps(document, separators=(",", ":")).encode()
        return f"{_b64(payload)}.{_b64(self._mac(purpose, payload))}"

    def _unseal(self, purpose: bytes, token: str | None) -> dict[str, Any] | None:
        """The document ``token`` carries if its MAC for ``purpose`` is right, else None."""
        if self._key is None or not token or len(token) > MAX_TOKEN_LENGTH:
            return None
        body, dot, mac_text = token.partition(".")
        try:
            payload, mac = _unb64(body), _unb64(mac_text)
        except (binascii.Error, ValueError):
            return None
        if not dot or not hmac.compare_digest(self._mac(purpose, payload), mac):
            return None
        try:
            document = json.loads(payload)
        except ValueError:
            return None
        return document if isinstance(document, dict) else None

    # -- sessions ---------------------------------------------------------------------

    def issue(self, principal: Principal, api_key: str, tenant: str) -> tuple[str, int]:
        """The cookie of a new session of ``tenant`` opened with ``api_key`` (whose
        principal is ``principal``), and its lifetime in seconds: at most
        :data:`SESSION_SECONDS`, and no later than the key's expiry."""
        now = int(time.time())
        expires = now + SESSION_SECONDS
        if principal.key_id is not None:
            via, key = MANAGED, principal.key_id
            record = self.registry.key(principal.key_id) if self.registry else None
            if record is not None and record.expires is not None:
                expires = min(expires, int(record.expires.timestamp()))
        else:
            via, key = BOOTSTRAP, key_digest(api_key)
        return self._issue(tenant, via, key, expires, None), max(expires - now, 0)

    def issue_for_link(self, grant: LinkGrant) -> tuple[str, int]:
        """The cookie of a new session opened with a sign-in link, and its lifetime in
        seconds: at most :data:`SESSION_SECONDS`, and no later than the link's expiry."""
        now = int(time.time())
        expires = min(now + SESSION_SECONDS, grant.expires)
        return (self._issue(grant.tenant, LINK, "", expires, sorted(grant.scopes)),
                max(expires - now, 0))

    def _issue(self, tenant: str, via: str, key: str, expires: int,
               scopes: list[str] | None) -> str:
        document: dict[str, Any] = {"t": tenant, "v": via, "k": key,
                                    "n": secrets.token_urlsafe(16), "e": expires}
        if scopes is not None:
            document["s"] = scopes
        return self._seal(b"session", document)

    def open(self, token: str | None) -> Session | None:
        """The session ``token`` stands for; None if absent, forged or expired, if the key
        it was opened with stopped working (revoked, expired, removed from the
        configuration), if its tenant was erased, or if it may not read."""
        document = self._unseal(b"session", token)
        if document is None:
            return None
        try:
            tenant, key, nonce, expires = (str(document["t"]), str(document["k"]),
                                           str(document["n"]), int(document["e"]))
            # Cookies issued before managed keys named a bootstrap key by its digest only.
            via = str(document.get("v", BOOTSTRAP))
            granted = frozenset(str(s) for s in document.get("s", ()))
        except (ValueError, KeyError, TypeError):
            return None
        now = time.time()
        if expires < now:
            return None
        registry = self.registry
        if registry is not None and registry.is_deleted(tenant):
            return None
        scopes = self._scopes_now(via, key, tenant, granted, now)
        if scopes is None:
            return None
        session = Session(tenant=tenant, via=via, key=key, scopes=scopes, nonce=nonce,
                          expires=expires, csrf_token=self.csrf_token(nonce))
        return session if session.allows(READ) else None

    def _scopes_now(self, via: str, key: str, tenant: str, granted: frozenset[str],
                    now: float) -> frozenset[str] | None:
        """What the session may do now, by the key it was opened with; None if that key
        no longer opens a session of ``tenant``."""
        if via == BOOTSTRAP:
            configured = self._bootstrap.get(key)
            if configured is None or configured not in (tenant, ADMIN_TENANT):
                return None
            return bootstrap_principal(configured).scopes
        if via == MANAGED:
            registry = self.registry
            record = registry.key(key) if registry is not None else None
            if registry is None or record is None or record.expired(now):
                return None
            principal = Principal(record.tenant, frozenset(record.scopes), record.id)
            if record.tenant != tenant and not principal.is_admin:
                return None
            registry.mark_used(record.id, now)  # a session's use is the key's use
            return principal.scopes
        if via == LINK:
            return granted & frozenset(LINK_SCOPES)
        return None

    # -- sign-in links ----------------------------------------------------------------

    def issue_link(self, tenant: str, expires: int,
                   scopes: tuple[str, ...] = LINK_SCOPES) -> str:
        """The token of a sign-in link: a session of ``tenant`` with ``scopes``, to be
        opened before ``expires`` (epoch seconds). It holds no API key."""
        return self._seal(b"sign-in-link", {"t": tenant, "s": sorted(scopes),
                                            "n": secrets.token_urlsafe(12), "e": expires})

    def open_link(self, token: str | None) -> LinkGrant:
        """What the link token grants; :class:`LinkRefused` (saying why) if it is
        malformed or forged, expired, or its tenant was erased since."""
        if not self.configured:
            raise LinkRefused("Sign-in links are not set up on this server (it has no "
                              "WEBHOOKS_CURSOR_SECRET): ask your administrator.")
        document = self._unseal(b"sign-in-link", token)
        invalid = LinkRefused("This sign-in link is not valid: it may have been cut short "
                              "or altered. Ask for a new one.")
        if document is None:
            raise invalid
        try:
            tenant, expires = str(document["t"]), int(document["e"])
            scopes = frozenset(str(s) for s in document["s"])
        except (ValueError, KeyError, TypeError) as exc:
            raise invalid from exc
        now = time.time()
        if (READ not in scopes or not scopes <= frozenset(LINK_SCOPES)
                or expires > now + LINK_SECONDS_MAX + 60):
            raise invalid
        if expires <= now:
            raise LinkRefused("This sign-in link has expired. Ask for a new one.")
        if self.registry is not None and self.registry.is_deleted(tenant):
            raise LinkRefused("The tenant of this sign-in link no longer exists.")
        return LinkGrant(tenant=tenant, scopes=scopes, expires=expires)

    # -- CSRF -------------------------------------------------------------------------

    def csrf_token(self, nonce: str) -> str:
        """The CSRF token of the session (or sign-in form) with ``nonce``."""
        if self._key is None:
            return ""  # nothing is accepted without a key (csrf_valid is False)
        return _b64(self._mac(b"csrf", nonce.encode())[:24])

    def csrf_valid(self, nonce: str, presented: str | None) -> bool:
        """True when ``presented`` is the CSRF token for ``nonce`` (constant time)."""
        return (self._key is not None and bool(presented)
                and hmac.compare_digest(self.csrf_token(nonce).encode(),
                                        (presented or "").encode()))
