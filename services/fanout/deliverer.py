"""The HTTP sender: one signed POST of one delivery task to one endpoint.

The deliverer decides nothing about retries; it reports what happened as a
:class:`DeliveryResult` (success, response status, first 1 KiB of the body, error
class, latency, ``Retry-After``). Error classes, as recorded on attempt records::

    refused_target   the URL or an address it resolves to is not allowed (SSRF guard)
    timeout          the whole attempt (DNS lookup, connect, request, response) took
                     longer than the delivery timeout
    connect          the connection could not be opened (refused, DNS failure, TLS)
    network          the connection broke during the exchange
    redirect         a 3xx answer; redirects are never followed
    http_status      any other non-2xx answer
    endpoint_misconfigured
                     a signing secret of the endpoint is unusable; nothing was sent

One :class:`Deliverer` per worker holds long-lived ``httpx.AsyncClient`` pools, one per
endpoint (keep-alive, explicit timeouts and limits, redirects off).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime

import httpx

from webhooks.delivery import DeliveryTask
from webhooks.endpoints import Endpoint
from webhooks.envelope import utcnow
from webhooks.signing import InvalidSecret, signature_header
from webhooks.target_policy import IPAddress, TargetPolicy, TargetRefused

USER_AGENT = "kafka-webhooks/0.1 (+https://www.standardwebhooks.com/)"
MAX_RESPONSE_BODY = 1024
RESOLVER_THREADS = 8
"""Concurrent DNS lookups per worker. They run in their own threads so that lookups
hanging on a slow resolver never starve the default executor the rest of the worker uses."""

HEADER_ID = "webhook-id"
HEADER_TIMESTAMP = "webhook-timestamp"
HEADER_SIGNATURE = "webhook-signature"
HEADER_ATTEMPT = "webhook-attempt"
HEADER_EVENT_TYPE = "webhook-event-type"


@dataclass(frozen=True)
class DeliveryResult:
    """What one attempt produced."""

    succeeded: bool
    latency_ms: float
    response_status: int | None = None
    response_body: str | None = None
    error: str | None = None
    retry_after: float | None = None
    """Seconds the receiver asked us to wait (``Retry-After``), if it said so."""

    @property
    def gone(self) -> bool:
        """The receiver answered ``410 Gone``: the endpoint should be disabled."""
        return self.response_status == 410


def build_headers(task: DeliveryTask, endpoint: Endpoint, body: bytes,
                  now: datetime | None = None) -> dict[str, str]:
    """The Standard Webhooks headers for ``task``, signed with every valid secret."""
    now = now or utcnow()
    timestamp = int(now.timestamp())
    return {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        HEADER_ID: task.event.id,
        HEADER_TIMESTAMP: str(timestamp),
        HEADER_SIGNATURE: signature_header(endpoint.signing_secrets(now), task.event.id,
                                           timestamp, body),
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
    """Sends delivery tasks over one pooled ``httpx.AsyncClient``."""

    def __init__(self, policy: TargetPolicy, timeout: float, connections_per_endpoint: int = 10,
                 max_idle_clients: int = 1000,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._policy = policy
        # httpx's timeouts apply per phase (a receiver sending one byte per second never
        # trips the read timeout), so deliver() also bounds the whole attempt.
        self._timeout = httpx.Timeout(timeout)
        self._timeout_seconds = timeout
        self._resolver = ThreadPoolExecutor(RESOLVER_THREADS, thread_name_prefix="resolve")
        self._limits = httpx.Limits(max_connections=connections_per_endpoint,
                                    max_keepalive_connections=connections_per_endpoint,
                                    keepalive_expiry=30.0)
        self._transport = transport
        self._max_idle = max_idle_clients
        # One pooled client per endpoint, least recently used first. httpcore scans its
        # whole pool for every request, which collapses with hundreds of connections in one
        # pool (measured: 40 req/s at 200 connections); small per-endpoint pools keep each
        # scan short and also keep one endpoint's connections from crowding out another's.
        self._clients: OrderedDict[str, httpx.AsyncClient] = OrderedDict()
        self._busy: Counter[str] = Counter()
        self._closing: set[asyncio.Task[None]] = set()

    def _client(self, key: str) -> httpx.AsyncClient:
        client = self._clients.pop(key, None)
        if client is None:
            client = httpx.AsyncClient(
                timeout=self._timeout, limits=self._limits, follow_redirects=False,
                transport=self._transport,
                # Never pick up proxies from the environment: the SSRF check is on the target.
                trust_env=False)
        self._clients[key] = client
        if len(self._clients) > self._max_idle:
            for idle in [k for k in self._clients if not self._busy[k]][:len(self._clients)
                                                                         - self._max_idle]:
                closing = asyncio.get_running_loop().create_task(self._clients.pop(idle).aclose())
                self._closing.add(closing)
                closing.add_done_callback(self._closing.discard)
        return client

    async def aclose(self) -> None:
        """Close every pool; lookups still hanging in the resolver are abandoned."""
        clients = list(self._clients.values())
        self._clients.clear()
        await asyncio.gather(*(client.aclose() for client in clients), *self._closing,
                             return_exceptions=True)
        self._resolver.shutdown(wait=False, cancel_futures=True)

    async def resolve_target(self, url: str) -> list[IPAddress]:
        """The checked addresses ``url`` resolves to now (raises TargetRefused).

        Resolved at send time, every time, so a DNS change after the endpoint was
        created cannot smuggle a private address in.
        """
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._resolver, self._policy.resolve, url)

    async def deliver(self, task: DeliveryTask, endpoint: Endpoint) -> DeliveryResult:
        """POST the task's envelope to the endpoint and classify the answer.

        The delivery timeout bounds the whole attempt: DNS lookup, connect, request and
        reading the (capped) response.
        """
        started = time.perf_counter()

        def elapsed() -> float:
            return round((time.perf_counter() - started) * 1000, 3)

        try:
            async with asyncio.timeout(self._timeout_seconds):
                return await self._attempt(task, endpoint, elapsed)
        except TimeoutError:
            return DeliveryResult(False, elapsed(), error="timeout", response_body=(
                f"the attempt took longer than the delivery timeout of "
                f"{self._timeout_seconds:g}s"))

    async def _attempt(self, task: DeliveryTask, endpoint: Endpoint,
                       elapsed: Callable[[], float]) -> DeliveryResult:
        """One attempt, not bounded as a whole: :meth:`deliver` does that."""
        try:
            addresses = await self.resolve_target(endpoint.url)
        except TargetRefused as exc:
            return DeliveryResult(False, elapsed(), error="refused_target",
                                  response_body=str(exc)[:MAX_RESPONSE_BODY])
        body = task.event.to_json()
        try:
            headers = build_headers(task, endpoint, body)
        except InvalidSecret as exc:
            # The schema lets through secrets that are not base64 of 24-64 bytes. An
            # ordinary failure moves the task on, and a fixed secret is used next attempt.
            return DeliveryResult(False, elapsed(), error="endpoint_misconfigured",
                                  response_body=f"cannot sign the request: {exc}")
        client = self._client(endpoint.id)
        self._busy[endpoint.id] += 1
        try:
            response, excerpt = await _post_pinned(client, httpx.URL(endpoint.url), addresses,
                                                   body, headers)
        except httpx.TimeoutException:
            return DeliveryResult(False, elapsed(), error="timeout")
        except httpx.ConnectError as exc:
            return DeliveryResult(False, elapsed(), error="connect",
                                  response_body=_describe(exc))
        except httpx.HTTPError as exc:
            return DeliveryResult(False, elapsed(), error="network",
                                  response_body=_describe(exc))
        finally:
            self._busy[endpoint.id] -= 1
            if not self._busy[endpoint.id]:
                del self._busy[endpoint.id]
        status = response.status_code
        if 200 <= status < 300:
            return DeliveryResult(True, elapsed(), response_status=status,
                                  response_body=excerpt)
        return DeliveryResult(
            False, elapsed(), response_status=status, response_body=excerpt,
            error="redirect" if 300 <= status < 400 else "http_status",
            retry_after=parse_retry_after(response.headers.get("retry-after")),
        )


async def _post_pinned(client: httpx.AsyncClient, url: httpx.URL, addresses: list[IPAddress],
                       body: bytes, headers: dict[str, str]) -> tuple[httpx.Response, str]:
    """POST to the addresses that were checked, never to a fresh lookup of the name.

    Letting httpx resolve the host again would reopen the DNS-rebinding window: a
    name can answer a public address to the check and a private one to the connect.
    So the request goes to the checked IP, with the original ``Host`` header and the
    original name as TLS server name (SNI and certificate check). Addresses are
    tried in resolver order while the connection is refused, as a dual-stack client would.
    """
    pinned_headers = {**headers, "host": url.netloc.decode("ascii")}
    extensions = {"sni_hostname": url.raw_host.decode("ascii")} if url.scheme == "https" else {}

    async def post_to(address: IPAddress) -> tuple[httpx.Response, str]:
        async with client.stream("POST", url.copy_with(host=str(address)), content=body,
                                 headers=pinned_headers, extensions=extensions) as response:
            return response, await _read_capped(response)

    *fallbacks, last = dict.fromkeys(addresses)
    for address in fallbacks:
        try:
            return await post_to(address)
        except httpx.ConnectError:
            continue
    return await post_to(last)


async def _read_capped(response: httpx.Response) -> str:
    """The first 1 KiB of the body (decoded leniently); the rest is not read."""
    try:
        # Already in memory (some transports read bodies eagerly).
        return response.content[:MAX_RESPONSE_BODY].decode("utf-8", errors="replace")
    except httpx.ResponseNotRead:
        pass
    chunks = bytearray()
    async for chunk in response.aiter_bytes():
        chunks += chunk
        if len(chunks) >= MAX_RESPONSE_BODY:
            break
    # Each byte decodes to at most one character, so the schema's maxLength holds.
    return bytes(chunks[:MAX_RESPONSE_BODY]).decode("utf-8", errors="replace")


def _describe(exc: Exception) -> str:
    return (f"{type(exc).__name__}: {exc}")[:MAX_RESPONSE_BODY]
