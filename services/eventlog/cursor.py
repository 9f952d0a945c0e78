"""Opaque, versioned pagination cursors that carry the filters of their listing.

A cursor holds, per Kafka partition, the offset of the last row served. Pages are
ordered by (partition, offset), which is append-only per partition, so resuming
"after these offsets" neither skips nor repeats a row however the rows' timestamps
are ordered. The token is ``base64url(json) . base64url(hmac)``: the MAC (keyed by
:func:`cursor_key`) makes tampering detectable. The JSON carries the listing's filters
(version 2), so a cursor alone continues its listing (:func:`resume`), and a digest of
the listing, tenant and filters it was issued for, so it cannot be replayed against
other filters, another listing or another tenant.

A listing ordered by a key instead of a Kafka position (the endpoints, by id) keeps the
last key served in ``after`` (``"k"`` in the token) and no positions.

Version 1 tokens (issued before the filters travelled in the cursor) carry only the
digest; they still resume when sent with the filters they were issued for.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from webhooks.settings import Settings

CURSOR_VERSION = 2
FILTERLESS_VERSION = 1
"""Tokens without the filters: still accepted together with their own filters."""
MAX_KEY_LENGTH = 256


class CursorError(ValueError):
    """The cursor is malformed, tampered with, or was issued for another request."""


def cursor_key(settings: Settings) -> bytes:
    """The MAC key: ``WEBHOOKS_CURSOR_SECRET``, else derived from the API keys.

    Every API replica shares the API keys, so the derived key works across replicas;
    changing the keys invalidates outstanding cursors (clients get a 400, not wrong data).
    """
    material = settings.cursor_secret or json.dumps(sorted(settings.api_keys.items()))
    return hashlib.sha256(b"webhooks-cursor\0" + material.encode()).digest()


def request_binding(listing: str, tenant: str, filters: Mapping[str, Any]) -> str:
    """A digest of what a cursor is valid for: the listing, the tenant and the filters."""
    canonical = json.dumps([listing, tenant, dict(sorted(filters.items()))], default=str,
                           separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:24]


def _canonical(filters: Mapping[str, Any]) -> dict[str, Any]:
    """``filters`` as they read back from a token's JSON (sorted, datetimes as text)."""
    result: dict[str, Any] = json.loads(json.dumps(dict(sorted(filters.items())), default=str))
    return result


@dataclass(frozen=True)
class Cursor:
    """Per partition, the offset of the last row already served; and the filters of the
    listing, which a token then carries (None: a token without them, version 1).
    ``after``: the last key served, for a listing ordered by key (None: from the start)."""

    positions: dict[int, int] = field(default_factory=dict)
    filters: dict[str, Any] | None = None
    after: str | None = None

    def advanced(self, rows: list[tuple[int, int]]) -> Cursor:
        """This cursor moved past ``rows`` of ``(partition, offset)``."""
        positions = dict(self.positions)
        for partition, offset in rows:
            if offset > positions.get(partition, -1):
                positions[partition] = offset
        return Cursor(positions, self.filters, self.after)

    def past(self, key: str | None) -> Cursor:
        """This cursor moved past the row with sort key ``key`` (None: not moved)."""
        return self if key is None else Cursor(self.positions, self.filters, key)

    def encode(self, binding: str, key: bytes) -> str:
        """The token: version 2 with the filters when the cursor has them, else 1."""
        document: dict[str, Any] = {
            "v": CURSOR_VERSION if self.filters is not None else FILTERLESS_VERSION,
            "b": binding, "p": {str(p): o for p, o in sorted(self.positions.items())}}
        if self.filters is not None:
            document["f"] = _canonical(self.filters)
        if self.after is not None:
            document["k"] = self.after
        payload = json.dumps(document, separators=(",", ":")).encode()
        mac = hmac.new(key, payload, hashlib.sha256).digest()[:16]
        return f"{_b64(payload)}.{_b64(mac)}"

    @classmethod
    def decode(cls, token: str, binding: str, key: bytes) -> Cursor:
        """Validate ``token`` against ``binding``; raises :class:`CursorError`."""
        document = _open(token, key)
        if document.get("b") != binding:
            raise CursorError("cursor was issued for a different listing or different filters")
        return _cursor_of(document)


def resume(token: str | None, listing: str, tenant: str, filters: Mapping[str, Any],
           key: bytes, *, filters_given: bool = True) -> tuple[Cursor, str]:
    """The cursor a request continues from, carrying the filters its listing runs with,
    and the binding to issue the next cursor with; raises :class:`CursorError`.

    Without a token: a fresh cursor with the request's ``filters``. With one: the
    token's positions and filters; a request that also gives filters
    (``filters_given``) must give the same ones, since a cursor's offsets only mean
    "everything before was served" for the filters it was issued for. A version 1 token
    carries no filters and resumes only with the request's own, as it always did.
    """
    if not token:
        return Cursor(filters=_canonical(filters)), request_binding(listing, tenant, filters)
    document = _open(token, key)
    if "f" not in document:  # version 1
        binding = request_binding(listing, tenant, filters)
        if document.get("b") != binding:
            raise CursorError("cursor was issued for a different listing or different filters")
        return Cursor(_cursor_of(document).positions, _canonical(filters)), binding
    carried = document["f"]
    if not isinstance(carried, dict):
        raise CursorError("cursor is malformed")
    binding = request_binding(listing, tenant, carried)
    if document.get("b") != binding:
        raise CursorError("cursor was issued for a different listing")
    if filters_given and _canonical(filters) != carried:
        raise CursorError("cursor was issued for different filters: send it alone (it "
                          "carries its filters) or with the same filters")
    return _cursor_of(document), binding


def _open(token: str, key: bytes) -> dict[str, Any]:
    """The JSON document of a token whose MAC and version check out."""
    body, dot, mac_text = token.partition(".")
    if not dot or len(token) > 4096:
        raise CursorError("cursor is malformed")
    try:
        payload, mac = _unb64(body), _unb64(mac_text)
    except (binascii.Error, ValueError) as exc:
        raise CursorError("cursor is malformed") from exc
    expected = hmac.new(key, payload, hashlib.sha256).digest()[:16]
    if not hmac.compare_digest(expected, mac):
        raise CursorError("cursor is invalid or was tampered with")
    try:
        document = json.loads(payload)
    except ValueError as exc:
        raise CursorError("cursor is malformed") from exc
    if not isinstance(document, dict):
        raise CursorError("cursor is malformed")
    if document.get("v") not in (CURSOR_VERSION, FILTERLESS_VERSION):
        raise CursorError(f"cursor version {document.get('v')!r} is not supported")
    if (document["v"] == CURSOR_VERSION) != ("f" in document):
        raise CursorError("cursor is malformed")
    return document


def _cursor_of(document: dict[str, Any]) -> Cursor:
    try:
        positions = {int(p): int(o) for p, o in document["p"].items()}
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CursorError("cursor is malformed") from exc
    if any(p < 0 or o < 0 for p, o in positions.items()):
        raise CursorError("cursor is malformed")
    after = document.get("k")
    if after is not None and (not isinstance(after, str) or len(after) > MAX_KEY_LENGTH):
        raise CursorError("cursor is malformed")
    filters = document.get("f")
    return Cursor(positions, filters if isinstance(filters, dict) else None, after)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
