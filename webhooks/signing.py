"""Standard Webhooks signatures: ``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``.

Compatible with the published ``standardwebhooks`` libraries: receivers verify with
the same ``whsec_`` secret. During a secret rotation several signatures are sent,
space-separated, and a receiver accepts the message if any one matches.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Iterable
from functools import lru_cache

SECRET_PREFIX = "whsec_"
SIGNATURE_VERSION = "v1"


def generate_secret(num_bytes: int = 32) -> str:
    """A fresh ``whsec_`` secret of ``num_bytes`` random bytes (24–64)."""
    if not 24 <= num_bytes <= 64:
        raise ValueError("secrets carry 24 to 64 random bytes")
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(num_bytes)).decode()


class InvalidSecret(ValueError):
    """A secret is not ``whsec_`` + base64 of 24–64 bytes; the message never quotes it."""


@lru_cache(maxsize=10_000)
def secret_key(secret: str) -> bytes:
    """The raw HMAC key of a ``whsec_`` secret (raises :class:`InvalidSecret`); decoded
    once per secret, not on every signature (the fanout signs every attempt)."""
    if not secret.startswith(SECRET_PREFIX):
        raise InvalidSecret("secret must start with whsec_")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX):], validate=True)
    except binascii.Error as exc:
        raise InvalidSecret(f"secret is not valid base64 ({exc})") from exc
    if not 24 <= len(key) <= 64:
        raise InvalidSecret("secret must carry 24 to 64 bytes")
    return key


def sign_payload(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """One ``v1,<base64>`` signature over the exact bytes sent."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode()}"


def signature_header(secrets_: Iterable[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: one signature per valid secret, space-separated."""
    return " ".join(sign_payload(secret, msg_id, timestamp, body) for secret in secrets_)


def verify_signature(secret: str, msg_id: str, timestamp: int, body: bytes, header: str) -> bool:
    """True when any signature in ``header`` matches; compared in constant time."""
    expected = sign_payload(secret, msg_id, timestamp, body).encode()
    return any(hmac.compare_digest(expected, candidate.encode()) for candidate in header.split())
