"""TLS material for tests, minted with ``trustme``: a private CA for receivers, another for
client certificates, and the server context of a receiver that requires a client
certificate (mutual TLS)."""

from __future__ import annotations

import ssl
from dataclasses import dataclass

import trustme

RECEIVER_NAME = "hooks.example.test"


@dataclass(frozen=True)
class ClientCertificate:
    """A client certificate (chain, leaf first) and its key, PEM, as a tenant sends them."""

    cert: str
    key: str


def client_certificate(authority: trustme.CA, name: str = "acme-webhooks",
                       key_type: trustme.KeyType = trustme.KeyType.ECDSA) -> ClientCertificate:
    leaf = authority.issue_cert(f"{name}.client.test", common_name=name, key_type=key_type)
    return ClientCertificate(cert=b"".join(pem.bytes() for pem in leaf.cert_chain_pems).decode(),
                             key=leaf.private_key_pem.bytes().decode())


def ca_pem(authority: trustme.CA) -> str:
    return authority.cert_pem.bytes().decode()


def mutual_tls_server(receivers: trustme.CA, clients: trustme.CA | None,
                      name: str = RECEIVER_NAME) -> ssl.SSLContext:
    """A receiver's context: its certificate (for ``name``) from ``receivers``; with
    ``clients``, a client certificate from that CA is required."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    receivers.issue_cert(name, "127.0.0.1").configure_cert(context)
    if clients is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        clients.configure_trust(context)
    return context
