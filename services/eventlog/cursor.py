"""Opaque, versioned pagination cursors, bound to the request they were issued for.

A cursor holds, per Kafka partition, the offset of the last row served. Pages are
ordered by (partition, offset), which is append-only per partition, so resuming
"after these offsets" neither skips nor repeats a row however the rows' timestamps
are ordered. The token is ``base64url(json) . base64url(hmac)``: the MAC (keyed by
:func:`cursor_key`) makes tampering detectable, and the JSON carries a digest of the
listing and filters it was issued for, so a cursor cannot be replayed against other
filters, another listing or another tenant.
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

CURSOR_VERSION = 1


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


@dataclass(frozen=True)
class Cursor:
    """Per partition, the offset of the last row already served."""

    positions: dict[int, int] = field(default_factory=dict)

    def advanced(self, rows: list[tuple[int, int]]) -> Cursor:
        """This cursor moved past ``rows`` of ``(partition, offset)``."""
        positions = dict(self.positions)
        for partition, offset in rows:
            if offset > positions.get(partition, -1):
                positions[partition] = offset
        return Cursor(positions)

    def encode(self, binding: str, key: bytes) -> str:
        payload = json.dumps(
            {"v": CURSOR_VERSION, "b": binding,
             "p": {str(p): o for p, o in sorted(self.positions.items())}},
            separators=(",", ":"),
        ).encode()
        mac = hmac.new(key, payload, hashlib.sha256).digest()[:16]
        return f"{_b64(payload)}.{_b64(mac)}"

    @classmethod
    def decode(cls, token: str, binding: str, key: bytes) -> Cursor:
        """Validate ``token`` against ``binding``; raises :class:`CursorError`."""
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
        document = json.loads(payload)
        if document.get("v") != CURSOR_VERSION:
            raise CursorError(f"cursor version {document.get('v')!r} is not supported")
        if document.get("b") != binding:
            raise CursorError("cursor was issued for a different listing or different filters")
        try:
            positions = {int(p): int(o) for p, o in document["p"].items()}
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CursorError("cursor is malformed") from exc
        if any(p < 0 or o < 0 for p, o in positions.items()):
            raise CursorError("cursor is malformed")
        return cls(positions)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
