"""Endpoint signing secrets encrypted at rest: AES-256-GCM under ``WEBHOOKS_SECRETS_KEY``.

A stored secret is either a sealed one or, from installs older than this module, a plain
``whsec_…`` that is still read as is (``webhooks rotate-secrets-key`` seals those)::

    whenc_v1.<key id>.<base64(12-byte nonce | ciphertext | 16-byte tag)>

The text names the key that sealed it, so a keyring can hold several keys: the first
seals, every one opens. That is what lets an operator add a key, re-encrypt, and retire
the old key without stopping anything. The associated data binds a ciphertext to what it
was sealed for (its key id, and the endpoint id, or for a secret header value the
endpoint's header: ``ep_…/headers/<name>``; the methods call it ``endpoint_id``), so a
sealed secret copied into another endpoint's record, or elsewhere in the same one, does
not open there. The same keyring seals secret custom header values.

Errors::

    SecretsKeyError              a stored secret cannot be opened (ValueError)
    ├── UnknownKeyId             it names a key id the keyring does not hold
    └── UndecryptableSecret      the key does not authenticate it: the wrong key under
                                 that id, a damaged text, or one moved to another endpoint

Messages name key ids, never a secret, a ciphertext or a key.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import re
from collections.abc import Iterable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from webhooks.text_setting import TextSetting

log = logging.getLogger(__name__)

SEALED_PREFIX = "whenc_v1."
KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12  # GCM's standard nonce; random, so at most ~2**32 seals per key
KEY_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


class SecretsKeyError(ValueError):
    """A stored signing secret cannot be opened with this keyring."""

    def __init__(self, message: str, key_id: str | None) -> None:
        super().__init__(message)
        self.key_id = key_id


class UnknownKeyId(SecretsKeyError):
    """The secret was sealed with a key id that ``WEBHOOKS_SECRETS_KEY`` does not hold."""


class UndecryptableSecret(SecretsKeyError):
    """The key under the secret's key id does not authenticate it."""


def is_sealed(stored: str) -> bool:
    """True for a ``whenc_v1.…`` text, False for a plain (legacy) ``whsec_…`` secret."""
    return stored.startswith(SEALED_PREFIX)


def key_id_of(stored: str) -> str | None:
    """The key id a sealed secret names; None for a plain one."""
    if not is_sealed(stored):
        return None
    return stored[len(SEALED_PREFIX):].partition(".")[0]


class SecretsKeyring(TextSetting):
    """The keys of ``WEBHOOKS_SECRETS_KEY`` (``kid:base64(32 bytes)[,kid:…]``): the first
    one seals, every one opens. Parsed once from settings and passed around as this value.

    Its ``repr`` and ``str`` show key ids only; :meth:`to_setting` is the one way back to
    the key material (to hand the same setting to a child process).
    """

    def __init__(self, keys: Iterable[tuple[str, bytes]]) -> None:
        self._keys: dict[str, bytes] = {}
        for key_id, key in keys:
            if not KEY_ID_PATTERN.match(key_id):
                raise ValueError(f"key id {key_id!r}: use 1-32 letters, digits, '_' or '-'")
            if key_id in self._keys:
                raise ValueError(f"key id {key_id!r} appears twice")
            if len(key) != KEY_BYTES:
                raise ValueError(f"key {key_id!r} must be {KEY_BYTES} bytes, not {len(key)}")
            self._keys[key_id] = key
        if not self._keys:
            raise ValueError("a keyring needs at least one key")
        self.primary = next(iter(self._keys))
        # One AESGCM object per key: its construction is paid once, not per secret.
        self._ciphers = {key_id: AESGCM(key) for key_id, key in self._keys.items()}

    @classmethod
    def parse(cls, text: str) -> SecretsKeyring:
        """``k2:BASE64,k1:BASE64`` (standard base64 of 32 bytes each); raises ValueError
        with a message that never quotes key material."""
        keys = []
        for index, item in enumerate(filter(None, (part.strip() for part in text.split(",")))):
            key_id, sep, encoded = item.partition(":")
            if not sep:
                raise ValueError(f"WEBHOOKS_SECRETS_KEY entry {index + 1} is not kid:base64-key")
            try:
                key = base64.b64decode(encoded.strip(), validate=True)
            except binascii.Error:
                raise ValueError(f"WEBHOOKS_SECRETS_KEY key {key_id.strip()!r} is not valid "
                                 "base64") from None
            keys.append((key_id.strip(), key))
        return cls(keys)

    @classmethod
    def generate(cls, key_id: str = "k1") -> SecretsKeyring:
        """A keyring of one fresh random key (``make up``, tests, new installs)."""
        return cls([(key_id, os.urandom(KEY_BYTES))])

    @property
    def key_ids(self) -> tuple[str, ...]:
        """Every key id, the sealing one first."""
        return tuple(self._keys)

    def to_setting(self) -> str:
        """The ``WEBHOOKS_SECRETS_KEY`` value this keyring was read from (key material!)."""
        return ",".join(f"{key_id}:{base64.b64encode(key).decode()}"
                        for key_id, key in self._keys.items())

    def __repr__(self) -> str:
        return f"SecretsKeyring(primary={self.primary!r}, key_ids={self.key_ids!r})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SecretsKeyring) and self._keys == other._keys

    def __hash__(self) -> int:
        return hash(self.key_ids)

    # -- sealing and opening --------------------------------------------------------------

    def seal(self, endpoint_id: str, secret: str) -> str:
        """``secret`` (``whsec_…``) sealed with the primary key for ``endpoint_id``."""
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._ciphers[self.primary].encrypt(
            nonce, secret.encode(), _associated_data(self.primary, endpoint_id))
        return f"{SEALED_PREFIX}{self.primary}.{base64.b64encode(nonce + sealed).decode()}"

    def open(self, endpoint_id: str, stored: str) -> str:
        """The ``whsec_…`` secret of a stored one (a plain one is returned as is); raises
        :class:`UnknownKeyId` or :class:`UndecryptableSecret`."""
        if not is_sealed(stored):
            return stored
        key_id, _, encoded = stored[len(SEALED_PREFIX):].partition(".")
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise UnknownKeyId(
                f"the secret of {endpoint_id} is sealed with key id {key_id!r}, which "
                f"WEBHOOKS_SECRETS_KEY does not hold (it holds {', '.join(self.key_ids)})",
                key_id)
        try:
            raw = base64.b64decode(encoded, validate=True)
            opened = cipher.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:],
                                    _associated_data(key_id, endpoint_id))
        except (binascii.Error, InvalidTag, ValueError):
            raise UndecryptableSecret(
                f"the secret of {endpoint_id} does not decrypt with key {key_id!r}: "
                "the wrong key under that id, or a damaged or moved secret", key_id) from None
        return opened.decode()

    def reseal(self, endpoint_id: str, stored: str) -> str:
        """``stored`` sealed with the primary key: as is when it already is, else opened
        (plain or another key) and sealed again."""
        if key_id_of(stored) == self.primary:
            return stored
        return self.seal(endpoint_id, self.open(endpoint_id, stored))


def _associated_data(key_id: str, endpoint_id: str) -> bytes:
    """What the tag authenticates besides the secret: format, key id and endpoint id."""
    return f"{SEALED_PREFIX}{key_id}.{endpoint_id}".encode()


class OpenedSecrets:
    """Opened signing secrets of one process, by (endpoint id, stored text).

    The fanout opens a secret the first time it signs with it (AES-GCM, ~2 µs) and then
    finds it with one dict lookup per delivery (signing went from 3.9 to 4.4 µs per
    delivery, measured with timeit); a rotation or re-encryption stores a new text, which
    simply misses once. A text that does not open is not remembered (its error is raised on each
    use, it is rare) but logged only once. Bounded: past ``max_size`` entries the oldest
    are dropped (secrets of deleted endpoints, superseded texts).
    """

    def __init__(self, keyring: SecretsKeyring | None, max_size: int = 100_000) -> None:
        self.keyring = keyring
        self.max_size = max_size
        self._opened: dict[tuple[str, str], str] = {}
        self._reported: set[tuple[str, str]] = set()

    def open(self, endpoint_id: str, stored: str) -> str:
        """The ``whsec_…`` secret of ``stored``; raises :class:`SecretsKeyError`."""
        cache_key = (endpoint_id, stored)
        opened = self._opened.get(cache_key)
        if opened is not None:
            return opened
        return self._open(cache_key)

    def open_all(self, endpoint_id: str, stored: Iterable[str]) -> list[str]:
        """:meth:`open` of each stored secret, in order."""
        return [self.open(endpoint_id, text) for text in stored]

    def _open(self, cache_key: tuple[str, str]) -> str:
        endpoint_id, stored = cache_key
        try:
            if self.keyring is None:
                if is_sealed(stored):
                    raise UnknownKeyId(f"the secret of {endpoint_id} is sealed but "
                                       "WEBHOOKS_SECRETS_KEY is not set", key_id_of(stored))
                opened = stored
            else:
                opened = self.keyring.open(endpoint_id, stored)
        except SecretsKeyError as exc:
            if cache_key not in self._reported:
                if len(self._reported) >= self.max_size:
                    self._reported.clear()
                self._reported.add(cache_key)
                log.error("cannot sign for endpoint %s: %s", endpoint_id, exc,
                          extra={"endpoint_id": endpoint_id})
            raise
        if len(self._opened) >= self.max_size:
            # Dicts keep insertion order: drop the oldest tenth at once.
            for old in list(self._opened)[: self.max_size // 10 or 1]:
                del self._opened[old]
        self._opened[cache_key] = opened
        return opened
