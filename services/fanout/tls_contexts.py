"""The TLS contexts of endpoints with TLS material of their own (mutual TLS, a private CA).

One ``ssl.SSLContext`` per endpoint and version of its material, built on first use off
the event loop (OpenSSL's loading costs 2-46 ms of CPU) and reused for every delivery;
the pool keeps such an endpoint's connections apart, since the context is part of
a connection's key. A delivery to an endpoint whose record did not change pays one
dict lookup and an identity comparison. A new version of the record with the same material
(a changed description) costs one comparison of the PEM texts; changed material, or a key
sealed again after a key rotation, builds a new context.

Material that cannot be used (a key sealed with a key id this worker lacks, a damaged
record) is remembered per version too, so a burst of deliveries does not rebuild it each
time; it is logged once, without the material.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections import OrderedDict

from webhooks.endpoint_tls import TlsMaterialError, client_context
from webhooks.endpoints import Endpoint, EndpointTls, tls_key_binding
from webhooks.secret_encryption import (
    SecretsKeyError,
    SecretsKeyring,
    UnknownKeyId,
    is_sealed,
    key_id_of,
)

log = logging.getLogger(__name__)

MAX_CONTEXTS = 10_000

Built = ssl.SSLContext | TlsMaterialError


class TlsContexts:
    """``ssl.SSLContext`` per endpoint with TLS material, by version of that material."""

    def __init__(self, keyring: SecretsKeyring | None, max_size: int = MAX_CONTEXTS) -> None:
        """``keyring`` opens the sealed client keys (without one, only plain keys: tests)."""
        self._keyring = keyring
        self._max_size = max_size
        self._built: OrderedDict[str, tuple[EndpointTls, Built | asyncio.Future[Built]]] = (
            OrderedDict())

    async def context(self, endpoint: Endpoint, tls: EndpointTls) -> ssl.SSLContext:
        """The context for ``endpoint``'s material ``tls``; raises :class:`TlsMaterialError`."""
        entry = self._built.get(endpoint.id)
        if entry is None or not (entry[0] is tls or entry[0] == tls) or (
                isinstance(entry[1], asyncio.Future) and entry[1].cancelled()):
            entry = self._start(endpoint.id, tls)
        built = entry[1]
        if isinstance(built, asyncio.Future):
            # Being built (maybe for another delivery): shielded, so that this delivery's
            # timeout does not cancel the build the others wait for.
            built = await asyncio.shield(built)
        if isinstance(built, TlsMaterialError):
            raise built
        return built

    def _start(self, endpoint_id: str, tls: EndpointTls
               ) -> tuple[EndpointTls, asyncio.Future[Built]]:
        loop = asyncio.get_running_loop()
        building = loop.run_in_executor(None, self._build, endpoint_id, tls)
        entry = (tls, building)
        self._built[endpoint_id] = entry
        self._built.move_to_end(endpoint_id)
        while len(self._built) > self._max_size:
            self._built.popitem(last=False)

        def settle(done: asyncio.Future[Built]) -> None:
            # Replace the future by its result, unless a newer version took the slot.
            if self._built.get(endpoint_id) is entry and not done.cancelled():
                self._built[endpoint_id] = (tls, done.result())

        building.add_done_callback(settle)
        return entry

    def _build(self, endpoint_id: str, tls: EndpointTls) -> Built:
        """In a worker thread: open the key, build the context; the error, not raised."""
        try:
            key = None if tls.client_key is None else self._open(endpoint_id, tls.client_key)
            return client_context(tls.client_cert, key, tls.ca_bundle)
        except SecretsKeyError as exc:
            error = TlsMaterialError("client_key", str(exc))
        except TlsMaterialError as exc:
            error = exc
        except Exception as exc:  # noqa: BLE001 - whatever else OpenSSL raises: by name only
            error = TlsMaterialError("tls", f"cannot be loaded ({type(exc).__name__})")
        log.error("cannot use the TLS material of endpoint %s: %s", endpoint_id, error,
                  extra={"endpoint_id": endpoint_id})
        return error

    def _open(self, endpoint_id: str, stored: str) -> str:
        """The PEM key (kept only as long as the context is built)."""
        if self._keyring is None:
            if is_sealed(stored):
                raise UnknownKeyId(f"the TLS key of {endpoint_id} is sealed but "
                                   "WEBHOOKS_SECRETS_KEY is not set", key_id_of(stored))
            return stored
        return self._keyring.open(tls_key_binding(endpoint_id), stored)
