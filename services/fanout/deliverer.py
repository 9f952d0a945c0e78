"""The HTTP sender: one signed POST of one delivery task to one endpoint.

The deliverer decides nothing about retries; it reports what happened as a
:class:`DeliveryResult` (success, response status, first 1 KiB of the body, error
class, latency, ``Retry-After``, the request's and the response's headers as
:mod:`captured_headers` keeps them). Error classes, as recorded on attempt records::

    refused_target   the URL or an address it resolves to is not allowed (SSRF guard)
    timeout          the whole attempt (DNS lookup, connect, request, response) took
                     longer than the delivery timeout
    connect          the connection could not be opened (refused, DNS failure, TLS, the
                     egress proxy unreachable or refusing the CONNECT)
    network          the connection broke during the exchange
    redirect         a 3xx answer; redirects are never followed
    http_status      any other non-2xx answer
    endpoint_misconfigured
                     a signing secret or the TLS material of the endpoint is unusable
                     (malformed, or sealed with a key this worker does not hold); nothing
                     was sent

One :class:`Deliverer` per worker holds one pool of keep-alive connections
(:mod:`services.fanout.http1`, one shared TLS context): each request goes straight to an
address the :class:`CheckedResolver` checked, with the original ``Host`` and TLS server
name. That pool replaced aiohttp on this path after measuring the deliverer on the 2-core
machine (10,000 deliveries, 100 in flight, loopback receiver): 240-300 µs of CPU per
delivery with aiohttp, 100-125 µs with the pool. (aiohttp had itself been chosen over
httpx, which cost ~1.9 ms per request.) Deliveries through the egress proxy still use
aiohttp, whose lookups go through the same resolver.

**Endpoints with TLS material** (a client certificate for mutual TLS, a private CA
bundle) are sent with a context of their own (their connections pooled apart), built once per
version of that material (:mod:`services.fanout.tls_contexts`); the others keep the
shared context. An unusable key fails the attempt as ``endpoint_misconfigured``.

**Egress proxy** (``WEBHOOKS_DELIVERY_PROXY``): every request goes through the proxy
(``proxy=`` per request; a worker without one takes exactly the path above). The SSRF
policy still decides first: the target's name is resolved and every address checked by
the :class:`CheckedResolver` before the proxy is asked anything, so a refused target
never reaches the proxy. The proxy itself is operator configuration: its host is
resolved without the policy (it usually has a private address). Then:

- *https targets*: ``CONNECT <checked address>:<port>``, not the name, and TLS inside the
  tunnel with the name as server name (SNI) and for certificate verification, and the
  name in ``Host``. The proxy never resolves the name, so a DNS answer that changes
  between our check and the proxy's lookup (rebinding) cannot send the delivery to a
  private address the proxy can reach; the certificate still has to match the name. The
  cost: the proxy sees (and logs) addresses, not names, so a proxy allowlist by domain
  name does not apply (filter by address there, or rely on the platform's policy); and
  one address is tried, the first of the checked answer, where a direct connection would
  fall back to the next.
- *http targets*: an absolute-form request (``POST http://name:port/path``) with
  ``Proxy-Authorization`` if the proxy wants credentials (never recorded in the attempt's
  headers). The proxy must resolve the name itself (a Host header naming it is what the
  receiver expects, and a proxy replaces ``Host`` with the request target's authority),
  so here a rebinding answer could still steer a delivery the check let through to an
  address the proxy can reach. ``WEBHOOKS_ENVIRONMENT=production`` refuses http targets
  altogether; elsewhere, have the proxy refuse private destinations too.

Proxy errors are ``connect``: the proxy cannot be reached, or it refuses or fails the
CONNECT (e.g. 407, 502); attempt records describe them without the proxy's address. For
an http target, the proxy's own answer (a 502 when it cannot reach the receiver) is an
``http_status`` like the receiver's.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
import ssl
import time
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
from yarl import URL

from services.fanout.captured_headers import (
    request_headers,
    response_headers,
    secret_header_names,
    without_proxy_authorization,
)
from services.fanout.checked_resolver import CheckedResolver
from services.fanout.http1 import ConnectFailed, ExchangeFailed, Http1Pool, Target
from services.fanout.tls_contexts import TlsContexts
from webhooks.delivery import DeliveryTask, HeaderPairs
from webhooks.delivery_proxy import DeliveryProxy
from webhooks.endpoint_tls import TlsMaterialError
from webhooks.endpoints import Endpoint, header_binding
from webhooks.envelope import utcnow
from webhooks.secret_encryption import OpenedSecrets, SecretsKeyError, SecretsKeyring
from webhooks.signing import InvalidSecret, signature_header
from webhooks.target_policy import IPAddress, TargetPolicy, TargetRefused

USER_AGENT = "kafka-webhooks/0.1 (+https://www.standardwebhooks.com/)"
MAX_RESPONSE_BODY = 1024
PROXY_ROUTES = 10_000
"""Targets whose route through the proxy a worker remembers."""
KEEPALIVE_SECONDS = 15.0
"""How long an idle connection is kept: a connection reused within this time goes to
an address checked at most this long before (plus the resolver's cache interval)."""

HEADER_ID = "webhook-id"
HEADER_TIMESTAMP = "webhook-timestamp"
HEADER_SIGNATURE = "webhook-signature"
HEADER_ATTEMPT = "webhook-attempt"
HEADER_EVENT_TYPE = "webhook-event-type"


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """What one attempt produced."""

    succeeded: bool
    latency_ms: float
    response_status: int | None = None
    response_body: str | None = None
    error: str | None = None
    retry_after: float | None = None
    """Seconds the receiver asked us to wait (``Retry-After``), if it said so."""
    request_headers: HeaderPairs | None = None
    """As sent (secret custom values masked); None if nothing was sent."""
    response_headers: HeaderPairs | None = None
    """The first 4 KiB of them; None without a response."""
    response_headers_truncated: bool = False

    @property
    def gone(self) -> bool:
        """The receiver answered ``410 Gone``: the endpoint should be disabled."""
        return self.response_status == 410


PLAIN_SECRETS_ONLY = OpenedSecrets(None)
"""For a deliverer given no keyring (tests of records with plain secrets)."""


def build_headers(task: DeliveryTask, endpoint: Endpoint, body: bytes,
                  now: datetime | None = None, secrets: OpenedSecrets = PLAIN_SECRETS_ONLY
                  ) -> dict[str, str]:
    """The endpoint's custom headers and the Standard Webhooks headers for ``task``,
    signed with every valid secret; signing secrets and secret header values are opened
    through ``secrets`` (a dict hit once opened; raises ``SecretsKeyError``). Custom names
    never clash: reserved ones are refused."""
    now = now or utcnow()
    timestamp = int(now.timestamp())
    signing = secrets.open_all(endpoint.id, endpoint.signing_secrets(now))
    return {
        **{header.name: secrets.open(header_binding(endpoint.id, header.name), header.value)
           if header.secret else header.value for header in endpoint.headers},
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        HEADER_ID: task.event.id,
        HEADER_TIMESTAMP: str(timestamp),
        HEADER_SIGNATURE: signature_header(signing, task.event.id, timestamp, body),
        HEADER_ATTEMPT: str(task.attempt),
        HEADER_EVENT_TYPE: task.event.type,
    }


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """``Retry-After`` as seconds from now: delta-seconds or an HTTP date; None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        return None
    return max(0.0, (moment - (now or utcnow())).total_seconds())


class Deliverer:
    """Sends delivery tasks over one pool of keep-alive connections (and an aiohttp session
    for the egress proxy, opened on its first use inside the running loop). ``keyring``
    opens the sealed signing secrets and TLS client keys (without one, only plain ones are
    used); with a ``proxy``, every request goes through it (see the module's docstring)."""

    def __init__(self, policy: TargetPolicy, timeout: float, concurrency: int = 200,
                 ssl_context: ssl.SSLContext | None = None,
                 keyring: SecretsKeyring | None = None,
                 proxy: DeliveryProxy | None = None) -> None:
        self._timeout_seconds = timeout
        self.secrets = OpenedSecrets(keyring)
        self.tls = TlsContexts(keyring)
        self._proxy = proxy
        self._proxy_url = URL(proxy.url) if proxy is not None else None
        self._proxy_headers = {"Proxy-Authorization": proxy.authorization} \
            if proxy is not None and proxy.authorization is not None else {}
        self._proxy_routes: dict[tuple[str, IPAddress],
                                 tuple[URL | None, str | None, str | None]] = {}
        # The proxy's host as aiohttp asks the resolver for it (IDNA, lower case).
        trusted = frozenset({self._proxy_url.raw_host}) if self._proxy_url is not None \
            and self._proxy_url.raw_host else frozenset[str]()
        self.resolver = CheckedResolver(policy, trusted_hosts=trusted)
        self._concurrency = concurrency
        # One TLS context for every connection (building one costs ~46 ms of CPU).
        self._ssl = ssl_context or ssl.create_default_context()
        self._pool = Http1Pool()
        self._session: aiohttp.ClientSession | None = None  # the egress proxy's

    def _open_session(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            resolver=self.resolver, use_dns_cache=False, ssl=self._ssl,
            # Per-endpoint concurrency is bounded by the dispatcher; this is the pool's
            # overall bound, the worker's global delivery concurrency.
            limit=self._concurrency, limit_per_host=0,
            keepalive_timeout=KEEPALIVE_SECONDS)
        return aiohttp.ClientSession(
            connector=connector, trust_env=False,  # proxies never: the check is on the target
            cookie_jar=aiohttp.DummyCookieJar(),  # receivers' cookies are never sent back
            timeout=aiohttp.ClientTimeout(total=None),  # deliver() bounds the whole attempt
            skip_auto_headers=("User-Agent",))

    async def aclose(self) -> None:
        """Close the pool; lookups still hanging in the resolver are abandoned."""
        self._pool.close()
        if self._session is not None:
            await self._session.close()
        await self.resolver.close()

    async def deliver(self, task: DeliveryTask, endpoint: Endpoint,
                      trace_headers: dict[str, str] | None = None) -> DeliveryResult:
        """POST the task's envelope to the endpoint and classify the answer.

        The delivery timeout bounds the whole attempt: DNS lookup, connect, request and
        reading the (capped) response. ``trace_headers`` (``traceparent``, traces on) are
        sent too.
        """
        started = time.perf_counter()
        exchange = _Exchange()  # what was sent and came back, even if the timeout struck
        try:
            async with asyncio.timeout(self._timeout_seconds):
                result = await self._attempt(task, endpoint, exchange, trace_headers)
        except TimeoutError:
            result = DeliveryResult(False, 0.0, error="timeout", response_body=(
                f"the attempt took longer than the delivery timeout of "
                f"{self._timeout_seconds:g}s"))
        latency = round((time.perf_counter() - started) * 1000, 3)
        return DeliveryResult(result.succeeded, latency, result.response_status,
                              result.response_body, result.error, result.retry_after,
                              exchange.request_headers, exchange.response_headers,
                              exchange.response_headers_truncated)

    async def _attempt(self, task: DeliveryTask, endpoint: Endpoint, exchange: _Exchange,
                       trace_headers: dict[str, str] | None) -> DeliveryResult:
        """One attempt, not bounded as a whole (:meth:`deliver` does that); latency and
        headers unset (``exchange`` gets the headers as soon as they are known)."""
        try:
            addresses = await self.resolver.check(endpoint.url)
        except TargetRefused as exc:
            return DeliveryResult(False, 0.0, error="refused_target",
                                  response_body=str(exc)[:MAX_RESPONSE_BODY])
        tls_context = None
        if endpoint.tls is not None:
            try:
                tls_context = await self.tls.context(endpoint, endpoint.tls)
            except TlsMaterialError as exc:  # logged once per version, by TlsContexts
                return DeliveryResult(False, 0.0, error="endpoint_misconfigured",
                                      response_body=f"cannot use the endpoint's TLS "
                                                    f"material: {exc}"[:MAX_RESPONSE_BODY])
        body = task.event.to_json()
        try:
            headers = build_headers(task, endpoint, body, secrets=self.secrets)
        except (InvalidSecret, SecretsKeyError) as exc:
            # The schema lets through secrets that are not base64 of 24-64 bytes, and a
            # record may be sealed with a key this worker lacks (logged once, by
            # OpenedSecrets). Never sign with anything else: an ordinary failure moves the
            # task on, and a fixed secret or key is used next attempt.
            return DeliveryResult(False, 0.0, error="endpoint_misconfigured",
                                  response_body=f"cannot sign the request: {exc}")
        if trace_headers:
            headers.update(trace_headers)
        mask = secret_header_names(endpoint)
        exchange.request_headers = request_headers(headers.items(), mask)
        if self._proxy is None:
            return await self._direct(endpoint, addresses, tls_context, headers, body,
                                      mask, exchange)
        return await self._proxied(endpoint, addresses, tls_context, headers, body, mask,
                                   exchange)

    async def _direct(self, endpoint: Endpoint, addresses: list[IPAddress],
                      tls_context: ssl.SSLContext | None, headers: dict[str, str],
                      body: bytes, mask: frozenset[str], exchange: _Exchange
                      ) -> DeliveryResult:
        """The attempt over the lean HTTP/1.1 pool, straight to a checked address."""
        target = Target.of(endpoint.url)
        try:
            connection = await self._pool.connect(target, addresses,
                                                  tls_context or self._ssl)
        except ConnectFailed as exc:
            return DeliveryResult(False, 0.0, error="connect",
                                  response_body=str(exc)[:MAX_RESPONSE_BODY])
        sent = [("Host", target.host_header), *headers.items(),
                ("Content-Length", str(len(body)))]
        exchange.request_headers = request_headers(sent, mask)
        try:
            answer = await self._pool.post(connection, target.path, sent, body)
        except ExchangeFailed as exc:
            return DeliveryResult(False, 0.0, error="network",
                                  response_body=str(exc)[:MAX_RESPONSE_BODY])
        exchange.response_headers, exchange.response_headers_truncated = (
            response_headers(answer.headers))
        excerpt = answer.body.decode("utf-8", errors="replace")
        retry_after = answer.header(b"retry-after")
        return _classified(answer.status, excerpt,
                           None if retry_after is None else retry_after.decode("latin-1"))

    async def _proxied(self, endpoint: Endpoint, addresses: list[IPAddress],
                       tls_context: ssl.SSLContext | None, headers: dict[str, str],
                       body: bytes, mask: frozenset[str], exchange: _Exchange
                       ) -> DeliveryResult:
        """The attempt through the egress proxy, over aiohttp (CONNECT tunnels)."""
        if self._session is None:
            self._session = self._open_session()
        options: dict[str, Any] = {} if tls_context is None else {"ssl": tls_context}
        url, options = self._through_proxy(endpoint.url, addresses, headers, options)
        request = self._session.post(url, data=body, headers=headers,
                                     allow_redirects=False, **options)
        try:
            async with request as response:
                status = response.status
                # As sent: with the Host, Accept* and Content-Length aiohttp added.
                exchange.request_headers = without_proxy_authorization(request_headers(
                    response.request_info.headers.items(), mask))
                exchange.response_headers, exchange.response_headers_truncated = (
                    response_headers(response.raw_headers))
                excerpt = await _read_capped(response.content)
                retry_after = response.headers.get("retry-after")
        except aiohttp.ClientHttpProxyError as exc:
            return DeliveryResult(False, 0.0, error="connect", response_body=(
                f"the egress proxy answered {exc.status} {exc.message} to CONNECT"))
        except aiohttp.ClientConnectorError as exc:
            if self._is_proxy(exc):
                # Described without the proxy's name or address: attempt records are the
                # tenant's, the proxy is the operator's.
                return DeliveryResult(False, 0.0, error="connect", response_body=(
                    f"cannot reach the egress proxy ({_os_reason(exc.os_error)})"))
            return DeliveryResult(False, 0.0, error="connect", response_body=_describe(exc))
        except (aiohttp.ClientError, OSError) as exc:
            return DeliveryResult(False, 0.0, error="network", response_body=_describe(exc))
        return _classified(status, excerpt, retry_after)

    def _is_proxy(self, exc: aiohttp.ClientConnectorError) -> bool:
        """The connection that failed was the one to the proxy."""
        return self._proxy is not None and self._proxy_url is not None and (
            isinstance(exc, aiohttp.ClientProxyConnectionError)
            or (exc.host, exc.port) == (self._proxy_url.raw_host, self._proxy.port))

    def _through_proxy(self, url: str, addresses: list[IPAddress], headers: dict[str, str],
                       options: dict[str, Any]) -> tuple[str | URL, dict[str, Any]]:
        """The URL and request options that send ``url`` through the proxy, with
        ``headers`` completed (``Host`` or ``Proxy-Authorization``)."""
        assert self._proxy_url is not None
        route = self._proxy_routes.get((url, addresses[0]))
        if route is None:
            route = self._proxy_route(url, addresses[0])
        target, host_header, server_hostname = route
        options = {**options, "proxy": self._proxy_url}
        if target is None:  # http: absolute-form, the proxy resolves the name
            if self._proxy_headers:
                headers.update(self._proxy_headers)
            return url, options
        if self._proxy_headers:
            options["proxy_headers"] = self._proxy_headers
        if host_header is not None:
            headers["Host"] = host_header
            options["server_hostname"] = server_hostname
        return target, options

    def _proxy_route(self, url: str, address: IPAddress
                     ) -> tuple[URL | None, str | None, str | None]:
        """(URL to request, Host, TLS server name) of an https target through the proxy:
        the checked address in the URL, so that CONNECT names it, and the name for Host
        and TLS; (None, None, None) for an http target. Cached: parsing and rewriting the
        URL costs ~15 µs, a delivery to a known target one dict lookup."""
        target = URL(url)
        if target.scheme != "https":
            route: tuple[URL | None, str | None, str | None] = (None, None, None)
        elif target.raw_host is None or _is_address(target.raw_host):
            route = (target, None, None)  # an IP literal: CONNECT to it as it is (checked)
        else:
            route = (target.with_host(str(address)),
                     target.host_port_subcomponent or target.raw_host, target.raw_host)
        if len(self._proxy_routes) >= PROXY_ROUTES:
            self._proxy_routes.clear()  # targets of deleted endpoints, superseded addresses
        self._proxy_routes[(url, address)] = route
        return route


def _classified(status: int, excerpt: str, retry_after: str | None) -> DeliveryResult:
    """The result of an attempt the receiver answered."""
    if 200 <= status < 300:
        return DeliveryResult(True, 0.0, response_status=status, response_body=excerpt)
    return DeliveryResult(
        False, 0.0, response_status=status, response_body=excerpt,
        error="redirect" if 300 <= status < 400 else "http_status",
        retry_after=parse_retry_after(retry_after),
    )


class _Exchange:
    """The headers of one attempt, kept as they become known."""

    __slots__ = ("request_headers", "response_headers", "response_headers_truncated")

    def __init__(self) -> None:
        self.request_headers: HeaderPairs | None = None
        self.response_headers: HeaderPairs | None = None
        self.response_headers_truncated = False


async def _read_capped(content: aiohttp.StreamReader) -> str:
    """The first 1 KiB of the body (decoded leniently); the rest is not read."""
    chunks = bytearray()
    while len(chunks) < MAX_RESPONSE_BODY:
        chunk = await content.read(MAX_RESPONSE_BODY - len(chunks))
        if not chunk:
            break
        chunks += chunk
    # Each byte decodes to at most one character, so the schema's maxLength holds.
    return bytes(chunks).decode("utf-8", errors="replace")


def _describe(exc: Exception) -> str:
    return (f"{type(exc).__name__}: {exc}")[:MAX_RESPONSE_BODY]


def _os_reason(error: OSError) -> str:
    """The reason of a connection error without the address it names (which asyncio
    puts in its message), e.g. ``Connection refused``."""
    if error.errno:
        return os.strerror(error.errno)
    if isinstance(error, socket.gaierror) or "cannot resolve" in str(error):
        return "its name does not resolve"
    return type(error).__name__


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
