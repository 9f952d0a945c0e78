"""A lean HTTP/1.1 client for webhook POSTs: keep-alive connections to checked addresses.

The fanout's direct deliveries (no egress proxy) go through this pool, not aiohttp's.
Measured on the 2-core machine (loopback receiver, 100 in flight): aiohttp's
``ClientSession.post`` costs ~150 µs of CPU per request (request and response objects,
multidicts, URL handling, redirect and cookie machinery the fanout never uses); this
client, one write per request and httptools' C parser for the answer, ~25 µs. At 2,000
deliveries a second that is a quarter of a core.

It does only what a webhook needs: POST a body with the given headers to one of the
addresses the SSRF check passed (:class:`~services.fanout.checked_resolver.CheckedResolver`),
over TLS with the URL's host as server name and for certificate verification, and read the
status, the raw headers and the first :data:`BODY_CAP` bytes of the answer. Redirects are
answers like any other (never followed). A connection is reused when the answer was read
whole and the receiver keeps it alive; it is dropped after :data:`IDLE_SECONDS` unused, when
the receiver closes it, and when an attempt was cut short (timeout, cap reached).

Errors: :class:`ConnectFailed` (no connection could be opened: refused, unreachable, TLS
handshake or certificate) and :class:`ExchangeFailed` (the connection broke or the answer
was not HTTP). The caller bounds the whole exchange with its own timeout; a cancelled
exchange closes its connection.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import cast

import httptools
from yarl import URL

from webhooks.target_policy import IPAddress

BODY_CAP = 1024
"""Bytes of the answer's body kept; a longer body is not read further."""
IDLE_SECONDS = 15.0
"""How long an idle connection is kept for reuse."""
SWEEP_SECONDS = 5.0
"""How often idle connections of every target are looked over (dropped when expired)."""


class ConnectFailed(OSError):
    """No connection to any of the target's addresses could be opened."""


class ExchangeFailed(OSError):
    """The connection broke before the answer was complete, or the answer was not HTTP."""


@dataclass(frozen=True, slots=True)
class Target:
    """What a request needs of an endpoint URL, parsed once per URL."""

    tls: bool
    port: int
    server_hostname: str
    """The host as the TLS server name (and certificate) must name it."""
    host_header: str
    path: str

    @classmethod
    @lru_cache(maxsize=10_000)
    def of(cls, url: str) -> Target:
        """The target of ``url`` (IDNA-encoded host, percent-encoded path and query, as
        the SSRF check spelled the host it looked up)."""
        parsed = URL(url)
        host = parsed.raw_host or ""
        return cls(tls=parsed.scheme == "https", port=parsed.port or 0,
                   server_hostname=host.strip("[]"),
                   host_header=parsed.host_port_subcomponent or host,
                   path=parsed.raw_path_qs or "/")


@dataclass(frozen=True, slots=True)
class Answer:
    """What came back: the status, the raw headers in order, the first bytes of the body."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def header(self, name: bytes) -> bytes | None:
        """The first value of header ``name`` (lower-case), if sent."""
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one exchange at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self.key: tuple[object, ...] = ()
        self._answer: asyncio.Future[Answer] | None = None
        self._headers: list[tuple[bytes, bytes]] = []
        self._body = bytearray()
        self._status = 0
        self._headers_done = False
        self._complete = False
        self._until_close = False  # neither Content-Length nor chunked: the body ends at EOF
        self._keep_alive = False

    # -- the exchange ------------------------------------------------------------------

    async def exchange(self, request: bytes) -> Answer:
        """Send ``request`` and wait for the answer (status, headers, capped body)."""
        assert self.transport is not None
        self._answer = asyncio.get_running_loop().create_future()
        self._headers, self._body, self._status = [], bytearray(), 0
        self._headers_done = self._complete = self._until_close = self._keep_alive = False
        self.transport.write(request)
        return await self._answer

    @property
    def reusable(self) -> bool:
        """The last answer was read whole and the receiver keeps the connection open."""
        return (self._complete and not self.closed and self.transport is not None
                and not self.transport.is_closing() and self._keep_alive)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _finish(self) -> None:
        if self._answer is not None and not self._answer.done():
            self._answer.set_result(Answer(self._status, self._headers, bytes(self._body)))

    def _fail(self, error: BaseException) -> None:
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(error)
        self.close()

    # -- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        if self._answer is None or self._answer.done():
            self.close()  # bytes nobody asked for: the connection cannot be trusted
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ExchangeFailed(f"the answer is not valid HTTP/1.1: {exc}"))

    def eof_received(self) -> bool:
        self._ended()
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._ended(exc)

    def _ended(self, exc: Exception | None = None) -> None:
        if self._headers_done and self._until_close:
            self._complete = True
            self._finish()  # the body ended with the connection, as announced
        elif exc is not None:
            self._fail(ExchangeFailed(f"the connection broke: {exc}"))
        else:
            self._fail(ExchangeFailed("the receiver closed the connection before its "
                                      "answer was complete"))

    # -- httptools callbacks -------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._status = self.parser.get_status_code()
        self._keep_alive = self.parser.should_keep_alive()  # (reset once the message ends)
        self._headers_done = True
        names = {name.lower() for name, _ in self._headers}
        self._until_close = b"content-length" not in names \
            and b"transfer-encoding" not in names and self._status not in (204, 304)

    def on_body(self, body: bytes) -> None:
        room = BODY_CAP - len(self._body)
        if room > 0:
            self._body += body[:room]
        if len(self._body) >= BODY_CAP:
            self._finish()  # enough kept; the rest is never read (the connection is dropped)

    def on_message_complete(self) -> None:
        self._complete = True
        self._finish()


class Http1Pool:
    """Keep-alive connections by (address, port, TLS context, server name)."""

    def __init__(self) -> None:
        self._idle: dict[tuple[object, ...], list[_Connection]] = {}
        self._next_sweep = time.monotonic() + SWEEP_SECONDS

    async def connect(self, target: Target, addresses: list[IPAddress],
                      tls: ssl.SSLContext | None) -> _Connection:
        """An idle connection to one of ``addresses`` or a new one to the first that
        accepts (TLS with ``tls`` for an https target); raises :class:`ConnectFailed`."""
        now = time.monotonic()
        if now >= self._next_sweep:
            self._sweep(now)
        last_error: OSError | None = None
        for address in addresses:
            key = (address, target.port, tls if target.tls else None,
                   target.server_hostname if target.tls else None)
            idle = self._idle.get(key)
            while idle:
                connection = idle.pop()
                if not connection.closed and now - connection.idle_since < IDLE_SECONDS:
                    return connection
                connection.close()
            try:
                _, connection = await asyncio.get_running_loop().create_connection(
                    _Connection, host=str(address), port=target.port,
                    ssl=tls if target.tls else None,
                    server_hostname=target.server_hostname if target.tls else None)
            except OSError as exc:  # refused, unreachable, TLS handshake or certificate
                last_error = exc
                continue
            connection.key = key
            return connection
        raise ConnectFailed(f"cannot connect to {target.host_header}: "
                            f"{type(last_error).__name__}: {last_error}")

    async def post(self, connection: _Connection, path: str,
                   headers: list[tuple[str, str]], body: bytes) -> Answer:
        """POST ``body`` to ``path`` with exactly ``headers`` (``Host`` and
        ``Content-Length`` included) over ``connection``; keeps the connection for reuse
        when the answer allows it. Raises :class:`ExchangeFailed`."""
        head = [f"POST {path} HTTP/1.1\r\n", *(f"{name}: {value}\r\n" for name, value in headers),
                "\r\n"]
        try:
            answer = await connection.exchange("".join(head).encode() + body)
        except BaseException:
            connection.close()  # cut short (timeout, cancel) or broken: never reused
            raise
        if connection.reusable:
            connection.idle_since = time.monotonic()
            self._idle.setdefault(connection.key, []).append(connection)
        else:
            connection.close()
        return answer

    def _sweep(self, now: float) -> None:
        """Drop idle connections that expired or were closed by their receivers."""
        self._next_sweep = now + SWEEP_SECONDS
        for key in list(self._idle):
            kept = []
            for connection in self._idle[key]:
                if connection.closed or now - connection.idle_since >= IDLE_SECONDS:
                    connection.close()
                else:
                    kept.append(connection)
            if kept:
                self._idle[key] = kept
            else:
                del self._idle[key]

    def close(self) -> None:
        """Close every idle connection."""
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()
