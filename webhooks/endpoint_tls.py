"""An endpoint's TLS material: checked where it enters, made into an ``ssl.SSLContext``.

The eventlog API checks what a tenant sends (:func:`check_tls`): the PEM texts parse,
the key is not encrypted and belongs to the certificate, the certificate has not expired,
and OpenSSL accepts the lot (the very context the fanout will build is built once). Each
error names the field (``client_cert``, ``client_key``, ``ca_bundle``), never its content.

The fanout builds one context per endpoint and version of its material
(:func:`client_context`, ~2 ms with a CA bundle, ~20-46 ms without one, for the system's
CAs) and reuses it for every delivery. OpenSSL loads certificate chains and keys only from
files: they are written to a private temporary directory that is removed at once, the
key encrypted with a random one-time password, so a plain key never touches the disk.
"""

from __future__ import annotations

import os
import secrets
import ssl
import tempfile
from datetime import UTC, datetime

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

MAX_CERT_PEM = 32 * 1024
"""A client certificate chain, leaf first (a few certificates)."""
MAX_KEY_PEM = 16 * 1024
"""A private key in PEM (an RSA-8192 key is ~6.4 KB)."""
MAX_CA_PEM = 64 * 1024
"""A private CA bundle (dozens of certificates; not a copy of the public CA store)."""
PEM_CERTIFICATE = "-----BEGIN CERTIFICATE-----"

KEY_TYPES = (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey,
             ed448.Ed448PrivateKey)


class TlsMaterialError(ValueError):
    """TLS material that cannot be used; ``field`` names the part at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.reason = message


def load_certificates(pem: str, field: str) -> list[x509.Certificate]:
    """The certificates of a PEM text (at least one, nothing else in it); raises
    :class:`TlsMaterialError` for ``field``."""
    if not pem.lstrip().startswith(PEM_CERTIFICATE):
        raise TlsMaterialError(field, f"must be PEM, starting with {PEM_CERTIFICATE}")
    if "PRIVATE KEY-----" in pem:
        # Certificates are stored as given and shown; a key pasted with them would be too.
        raise TlsMaterialError(field, "holds a private key: give certificates only (the "
                                      "key goes in client_key)")
    try:
        return x509.load_pem_x509_certificates(pem.encode())
    except ValueError:
        raise TlsMaterialError(field, "is not a valid PEM certificate (or chain)") from None


def check_client_pair(cert_pem: str, key_pem: str, now: datetime | None = None) -> None:
    """The key is an unencrypted private key of a supported type (RSA, EC, Ed25519,
    Ed448) whose public half is the first certificate's, which is valid now."""
    leaf = load_certificates(cert_pem, "client_cert")[0]
    moment = now or datetime.now(UTC)
    if leaf.not_valid_after_utc <= moment:
        raise TlsMaterialError("client_cert", "has expired "
                               f"({leaf.not_valid_after_utc.isoformat()})")
    try:
        key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    except TypeError:  # "Password was not given but private key is encrypted"
        raise TlsMaterialError("client_key", "is encrypted; give the key without a "
                               "passphrase (it is stored encrypted)") from None
    except (ValueError, UnsupportedAlgorithm):
        raise TlsMaterialError("client_key", "is not a valid PEM private key") from None
    if not isinstance(key, KEY_TYPES):
        raise TlsMaterialError("client_key", "must be an RSA, EC, Ed25519 or Ed448 key")
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if key.public_key().public_bytes(*spki) != leaf.public_key().public_bytes(*spki):
        raise TlsMaterialError("client_key", "does not belong to client_cert (the first "
                               "certificate of the chain)")


def check_tls(client_cert: str | None, client_key: str | None, ca_bundle: str | None) -> None:
    """What the eventlog API asks of an endpoint's TLS material; raises
    :class:`TlsMaterialError` naming the field."""
    if (client_cert is None) != (client_key is None):
        missing = "client_key" if client_key is None else "client_cert"
        raise TlsMaterialError(missing, "client_cert and client_key go together")
    if client_cert is None and ca_bundle is None:
        raise TlsMaterialError("tls", "give client_cert and client_key, or ca_bundle, or "
                               "both (null removes the TLS settings)")
    if client_cert is not None and client_key is not None:
        check_client_pair(client_cert, client_key)
    if ca_bundle is not None:
        load_certificates(ca_bundle, "ca_bundle")
    client_context(client_cert, client_key, ca_bundle)  # what OpenSSL makes of it


def client_context(client_cert: str | None, client_key: str | None,
                   ca_bundle: str | None) -> ssl.SSLContext:
    """A client context that verifies the receiver (against ``ca_bundle`` only, if given,
    else the system's CAs) and presents the client certificate, if given; raises
    :class:`TlsMaterialError` when OpenSSL refuses the material."""
    try:
        context = ssl.create_default_context(cadata=ca_bundle)
    except (ssl.SSLError, ValueError) as exc:
        raise TlsMaterialError("ca_bundle", f"OpenSSL refuses it ({_reason(exc)})") from None
    if client_cert is not None and client_key is not None:
        _load_client_pair(context, client_cert, client_key)
    return context


def _load_client_pair(context: ssl.SSLContext, cert_pem: str, key_pem: str) -> None:
    try:
        key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    except (TypeError, ValueError, UnsupportedAlgorithm):
        raise TlsMaterialError("client_key", "is not an unencrypted PEM private key") from None
    password = secrets.token_bytes(32).hex().encode()
    encrypted = key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.BestAvailableEncryption(password))
    with tempfile.TemporaryDirectory(prefix="endpoint-tls-") as folder:  # mode 0700
        cert_path = os.path.join(folder, "cert.pem")
        key_path = os.path.join(folder, "key.pem")
        _write_private(cert_path, cert_pem.encode())
        _write_private(key_path, encrypted)
        try:
            context.load_cert_chain(cert_path, key_path, password=password)
        except (ssl.SSLError, ValueError) as exc:
            raise TlsMaterialError("client_cert", f"OpenSSL refuses the certificate and key "
                                   f"({_reason(exc)})") from None


def _write_private(path: str, data: bytes) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)


def _reason(exc: Exception) -> str:
    """OpenSSL's reason (e.g. ``EE_KEY_TOO_SMALL``), which never quotes the material."""
    return getattr(exc, "reason", None) or type(exc).__name__
