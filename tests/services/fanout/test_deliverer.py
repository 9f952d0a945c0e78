"""The deliverer against real receivers on loopback: aiohttp apps that record what they
get, and raw sockets that misbehave (hang, trickle, hang up mid-answer)."""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from types import TracebackType
from typing import Any, Self

import pytest
import trustme
import uvloop
from aiohttp import web
from standardwebhooks.webhooks import Webhook

from services.fanout import checked_resolver
from services.fanout.deliverer import (
    MAX_RESPONSE_BODY,
    USER_AGENT,
    Deliverer,
    DeliveryResult,
    build_headers,
    parse_retry_after,
)
from tests.support.fake_dns import FakeDNS
from webhooks.delivery import DeliveryTask
from webhooks.endpoints import Endpoint, EndpointSecret, new_endpoint_id
from webhooks.envelope import Envelope, utcnow
from webhooks.signing import generate_secret
from webhooks.target_policy import TargetPolicy

LOOPBACK = TargetPolicy.create(("127.0.0.0/8",), production=False)


@pytest.fixture(params=["asyncio", "uvloop"])
def event_loop_policy(request: pytest.FixtureRequest) -> asyncio.AbstractEventLoopPolicy:
    """Every test on both loops: the worker runs uvloop, whose transports are not
    asyncio's classes."""
    return uvloop.EventLoopPolicy() if request.param == "uvloop" \
        else asyncio.DefaultEventLoopPolicy()


def make_endpoint(url: str = "http://127.0.0.1:9/hook", secrets: list[str] | None = None,
                  expires: list[datetime | None] | None = None) -> Endpoint:
    secrets = secrets or [generate_secret()]
    expires = expires or [None] * len(secrets)
    now = utcnow()
    return Endpoint(id=new_endpoint_id(), tenant="acme", url=url, events=["*"],
                    secrets=[EndpointSecret(secret=s, expires=e)
                             for s, e in zip(secrets, expires, strict=True)],
                    created=now, updated=now)


def make_task(endpoint: Endpoint, attempt: int = 1) -> DeliveryTask:
    event = Envelope.create(type="order.shipped", tenant="acme", api_version="2026-11-01",
                            data={"object": {"id": "order_1", "note": "héllo"}})
    return DeliveryTask.create(event, endpoint.id).model_copy(update={"attempt": attempt})


async def deliver_with(endpoint: Endpoint, task: DeliveryTask, policy: TargetPolicy = LOOPBACK,
                       timeout: float = 2.0, ssl_context: ssl.SSLContext | None = None
                       ) -> DeliveryResult:
    """One delivery by a fresh deliverer (fresh pool, fresh DNS cache)."""
    deliverer = Deliverer(policy, timeout=timeout, ssl_context=ssl_context)
    try:
        return await deliverer.deliver(task, endpoint)
    finally:
        await deliverer.aclose()


# --- Receivers on loopback ----------------------------------------------------------

@dataclass
class Recorded:
    """One request a receiver got."""

    method: str
    url: str
    headers: dict[str, str]
    """Names lower-cased."""
    body: bytes


class LoopbackReceiver:
    """An aiohttp receiver on a loopback address recording every request; ``answer``
    builds each response (204 unless told)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0,
                 tls: ssl.SSLContext | None = None, keep_alive: bool = True) -> None:
        self.host, self.port, self.tls, self.keep_alive = host, port, tls, keep_alive
        self.requests: list[Recorded] = []
        self.answer: Callable[[], web.StreamResponse] = lambda: web.Response(status=204)
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind((self.host, self.port))
        self.port = listener.getsockname()[1]
        await web.SockSite(self._runner, listener, ssl_context=self.tls).start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(Recorded(
            request.method, str(request.url),
            {name.lower(): value for name, value in request.headers.items()},
            await request.read()))
        response = self.answer()
        if not self.keep_alive:
            response.force_close()
        return response

    def url(self, path: str = "/hook", host: str | None = None) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{host or self.host}:{self.port}{path}"


@pytest.fixture
async def receiver() -> AsyncIterator[LoopbackReceiver]:
    async with LoopbackReceiver() as started:
        yield started


Behaviour = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def raw_server(behaviour: Behaviour) -> AsyncIterator[int]:
    """A TCP server on 127.0.0.1 running ``behaviour`` per connection; yields its port."""
    connections: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)
        try:
            await behaviour(reader, writer)
        except ConnectionError:
            pass  # the deliverer gave up
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for writer in connections:
            writer.close()  # ends a behaviour still waiting for the client
        await server.wait_closed()


async def never_answers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    await reader.read()  # until the client hangs up


async def never_finishes_the_handshake(reader: asyncio.StreamReader,
                                       writer: asyncio.StreamWriter) -> None:
    await reader.read()  # the ClientHello is never answered


async def hangs_up_before_answering(reader: asyncio.StreamReader,
                                    writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")


async def hangs_up_mid_headers(reader: asyncio.StreamReader,
                               writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/pl")
    await writer.drain()


async def hangs_up_mid_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n" + b"x" * 10)
    await writer.drain()


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- What is sent, and how the answer is classified ---------------------------------

async def test_posts_the_exact_envelope_bytes_with_verifiable_standard_headers(
        receiver: LoopbackReceiver) -> None:
    endpoint = make_endpoint(url=receiver.url())
    task = make_task(endpoint, attempt=3)
    result = await deliver_with(endpoint, task)

    assert result.succeeded and result.response_status == 204 and result.error is None
    [request] = receiver.requests
    assert request.method == "POST" and request.url == endpoint.url
    assert request.body == task.event.to_json()
    assert request.headers["webhook-id"] == task.event.id
    assert request.headers["webhook-attempt"] == "3"
    assert request.headers["webhook-event-type"] == "order.shipped"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"] == USER_AGENT
    verified = Webhook(endpoint.secrets[0].secret).verify(request.body, request.headers)
    assert verified == task.event.model_dump()


def test_rotation_signs_with_every_unexpired_secret() -> None:
    new, old, expired = generate_secret(), generate_secret(), generate_secret()
    now = datetime(2026, 11, 22, 12, tzinfo=UTC)
    endpoint = make_endpoint(secrets=[new, old, expired], expires=[
        None, now + timedelta(hours=1), now - timedelta(seconds=1)])
    task = make_task(endpoint)
    body = task.event.to_json()
    headers = build_headers(task, endpoint, body, now)
    assert len(headers["webhook-signature"].split()) == 2
    assert headers["webhook-timestamp"] == str(int(now.timestamp()))
    for secret in (new, old):
        # The library rejects old timestamps, so verify the signatures with its helper.
        assert Webhook(secret).sign(task.event.id, now, body.decode()) in \
            headers["webhook-signature"].split()
    assert Webhook(expired).sign(task.event.id, now, body.decode()) not in \
        headers["webhook-signature"]


async def test_during_a_rotation_the_receiver_can_verify_with_either_secret(
        receiver: LoopbackReceiver) -> None:
    new, old, expired = generate_secret(), generate_secret(), generate_secret()
    now = utcnow()
    endpoint = make_endpoint(url=receiver.url(), secrets=[new, old, expired], expires=[
        None, now + timedelta(hours=1), now - timedelta(seconds=1)])
    assert (await deliver_with(endpoint, make_task(endpoint))).succeeded
    [request] = receiver.requests
    assert len(request.headers["webhook-signature"].split()) == 2
    for secret in (new, old):
        assert Webhook(secret).verify(request.body, request.headers)["type"] == "order.shipped"


@pytest.mark.parametrize(("status", "error"), [
    (500, "http_status"), (404, "http_status"), (301, "redirect"), (307, "redirect"),
    (410, "http_status")])
async def test_non_2xx_answers_are_failures_and_redirects_are_not_followed(
        receiver: LoopbackReceiver, status: int, error: str) -> None:
    async with LoopbackReceiver() as elsewhere:
        receiver.answer = lambda: web.Response(
            status=status, headers={"location": elsewhere.url()}, text="nope")
        endpoint = make_endpoint(url=receiver.url())
        result = await deliver_with(endpoint, make_task(endpoint))
    assert not result.succeeded
    assert (result.response_status, result.error, result.response_body) == (status, error, "nope")
    assert result.gone == (status == 410)
    assert [r.url for r in receiver.requests] == [endpoint.url]  # one request
    assert elsewhere.requests == []  # the redirect target was never called


async def test_the_retry_after_of_a_failed_answer_is_reported(
        receiver: LoopbackReceiver) -> None:
    receiver.answer = lambda: web.Response(status=503, headers={"retry-after": "120"})
    endpoint = make_endpoint(url=receiver.url())
    result = await deliver_with(endpoint, make_task(endpoint))
    assert (result.error, result.response_status, result.retry_after) == (
        "http_status", 503, 120.0)


@pytest.mark.parametrize(("scheme", "behaviour", "error"), [
    ("http", never_answers, "timeout"),
    ("https", never_finishes_the_handshake, "timeout"),
    ("http", hangs_up_before_answering, "network"),
    ("http", hangs_up_mid_headers, "network"),
    ("http", hangs_up_mid_body, "network")])
async def test_transport_errors_are_classified(scheme: str, behaviour: Behaviour,
                                               error: str) -> None:
    async with raw_server(behaviour) as port:
        endpoint = make_endpoint(url=f"{scheme}://127.0.0.1:{port}/hook")
        result = await deliver_with(endpoint, make_task(endpoint), timeout=0.5)
    assert not result.succeeded and result.error == error, result
    assert result.response_status is None


async def test_a_refused_connection_is_a_connect_error() -> None:
    endpoint = make_endpoint(url=f"http://127.0.0.1:{closed_port()}/hook")
    result = await deliver_with(endpoint, make_task(endpoint))
    assert not result.succeeded and result.error == "connect", result
    assert result.response_status is None and result.response_body


async def test_only_the_first_kibibyte_of_the_response_is_kept(
        receiver: LoopbackReceiver) -> None:
    receiver.answer = lambda: web.Response(status=200, body=b"x" * 100_000)
    endpoint = make_endpoint(url=receiver.url())
    result = await deliver_with(endpoint, make_task(endpoint))
    assert result.succeeded and result.response_body == "x" * MAX_RESPONSE_BODY


@pytest.mark.parametrize("secret", ["whsec_AAAA", "whsec_AAAAA", "whsec_" + "A" * 200])
async def test_an_unusable_secret_fails_the_attempt_without_a_request(
        receiver: LoopbackReceiver, secret: str) -> None:
    # Each matches the schema's pattern, but is not base64 of 24-64 bytes.
    endpoint = make_endpoint(url=receiver.url(), secrets=[secret])
    result = await deliver_with(endpoint, make_task(endpoint))
    assert not result.succeeded and result.error == "endpoint_misconfigured", result
    assert "cannot sign" in (result.response_body or "")
    assert secret not in (result.response_body or "") and receiver.requests == []


@pytest.mark.parametrize("url", ["http://10.0.0.7/hook", "http://169.254.169.254/latest",
                                 "http://[::1]:8080/", "ftp://example.com/",
                                 "http://１２７.０.０.１/hook"])
async def test_private_targets_are_refused_before_any_request(url: str) -> None:
    endpoint = make_endpoint(url=url)
    result = await deliver_with(endpoint, make_task(endpoint),
                                policy=TargetPolicy.create((), production=False))
    assert not result.succeeded and result.error == "refused_target", result


async def test_production_requires_https() -> None:
    endpoint = make_endpoint(url="http://93.184.215.14/hook")
    result = await deliver_with(endpoint, make_task(endpoint),
                                policy=TargetPolicy.create((), production=True))
    assert result.error == "refused_target" and "https" in (result.response_body or "")


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    now = datetime(2026, 11, 22, 12, tzinfo=UTC)
    assert parse_retry_after("120", now) == 120.0
    assert parse_retry_after(format_datetime(now + timedelta(seconds=30), usegmt=True),
                             now) == 30.0
    assert parse_retry_after(format_datetime(now - timedelta(seconds=30), usegmt=True),
                             now) == 0.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("-5") is None


# --- The connection goes to the address that was checked ----------------------------



@pytest.mark.parametrize("allow_listed", [
    pytest.param("127.0.0.0/8", id="victim-allowed"),  # only the pin keeps it from the victim
    pytest.param("127.0.0.1/32", id="victim-private")])
async def test_a_rebinding_name_cannot_redirect_the_connection(
        fake_dns: FakeDNS, allow_listed: str) -> None:
    # The name answers the allowed receiver to the first lookup and a "victim" on the
    # same port after that. A second lookup at connect time would reach the victim (or
    # fail, were the victim refused); the deliverer must connect to what it checked.
    async with LoopbackReceiver() as allowed, \
            LoopbackReceiver(host="127.0.0.2", port=allowed.port) as victim:
        fake_dns.answers["rebind.test"] = [["127.0.0.1"], ["127.0.0.2"]]
        endpoint = make_endpoint(url=allowed.url(host="rebind.test"))
        policy = TargetPolicy.create((allow_listed,), production=False)

        result = await deliver_with(endpoint, make_task(endpoint), policy=policy)
        assert result.succeeded, result
        assert fake_dns.lookups == {"rebind.test": 1}
        [request] = allowed.requests
        assert request.headers["host"] == f"rebind.test:{allowed.port}"
        assert victim.requests == []

    if allow_listed == "127.0.0.1/32":
        # A fresh deliverer (fresh cache) checks the new answer and refuses it.
        result = await deliver_with(endpoint, make_task(endpoint), policy=policy)
        assert result.error == "refused_target" and "127.0.0.2" in (result.response_body or "")
        assert victim.requests == []


async def test_an_international_name_is_checked_as_the_connection_spells_it(
        fake_dns: FakeDNS, receiver: LoopbackReceiver) -> None:
    # aiohttp asks for the IDNA (UTS 46) form; the check must look up that same name.
    fake_dns.answers["xn--fa-hia.test"] = [["127.0.0.1"]]
    fake_dns.answers["fass.test"] = [["127.0.0.2"]]  # what IDNA 2003 would make of it
    endpoint = make_endpoint(url=receiver.url(host="faß.test"))
    result = await deliver_with(endpoint, make_task(endpoint))
    assert result.succeeded, result
    assert fake_dns.lookups == {"xn--fa-hia.test": 1}
    [request] = receiver.requests
    assert request.headers["host"] == f"xn--fa-hia.test:{receiver.port}"


async def test_a_name_that_cannot_be_looked_up_is_refused_not_raised(
        receiver: LoopbackReceiver) -> None:
    # A 64-character label passes the URL checks, but IDNA refuses to encode it.
    endpoint = make_endpoint(url=receiver.url(host="a" * 64 + ".test"))
    result = await deliver_with(endpoint, make_task(endpoint))
    assert result.error == "refused_target" and "cannot resolve" in (result.response_body or "")


async def test_one_deliverer_reuses_a_checked_answer_within_the_cache_interval(
        fake_dns: FakeDNS, receiver: LoopbackReceiver) -> None:
    fake_dns.answers["busy.test"] = [["127.0.0.1"], ["127.0.0.2"]]
    endpoint = make_endpoint(url=receiver.url(host="busy.test"))
    deliverer = Deliverer(LOOPBACK, timeout=2.0)
    try:
        for _ in range(2):
            assert (await deliverer.deliver(make_task(endpoint), endpoint)).succeeded
    finally:
        await deliverer.aclose()
    assert fake_dns.lookups == {"busy.test": 1}
    assert len(receiver.requests) == 2


async def test_after_the_cache_interval_a_changed_answer_is_seen(
        fake_dns: FakeDNS, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checked_resolver, "CACHE_SECONDS", 0.3)
    policy = TargetPolicy.create(("127.0.0.1/32", "127.0.0.3/32"), production=False)
    # No keep-alive, so that each delivery opens a connection to the current answer.
    async with LoopbackReceiver(keep_alive=False) as first, \
            LoopbackReceiver(host="127.0.0.3", port=first.port, keep_alive=False) as moved, \
            LoopbackReceiver(host="127.0.0.2", port=first.port) as victim:
        fake_dns.answers["moving.test"] = [["127.0.0.1"], ["127.0.0.3"], ["127.0.0.2"]]
        endpoint = make_endpoint(url=first.url(host="moving.test"))
        deliverer = Deliverer(policy, timeout=2.0)
        try:
            assert (await deliverer.deliver(make_task(endpoint), endpoint)).succeeded
            assert (await deliverer.deliver(make_task(endpoint), endpoint)).succeeded
            assert (len(first.requests), fake_dns.lookups["moving.test"]) == (2, 1)

            await asyncio.sleep(0.35)
            assert (await deliverer.deliver(make_task(endpoint), endpoint)).succeeded
            assert (len(moved.requests), fake_dns.lookups["moving.test"]) == (1, 2)

            await asyncio.sleep(0.35)
            result = await deliverer.deliver(make_task(endpoint), endpoint)
            assert result.error == "refused_target", result
            assert "127.0.0.2" in (result.response_body or "")
            assert fake_dns.lookups["moving.test"] == 3
        finally:
            await deliverer.aclose()
        assert (len(first.requests), len(moved.requests), victim.requests) == (2, 1, [])


@pytest.mark.parametrize("via_name", [False, True], ids=["address", "name"])
async def test_a_receiver_outside_the_policy_gets_no_request(
        fake_dns: FakeDNS, receiver: LoopbackReceiver, via_name: bool) -> None:
    fake_dns.answers["loopback.test"] = [["127.0.0.1"]]
    endpoint = make_endpoint(url=receiver.url(host="loopback.test" if via_name else None))
    result = await deliver_with(endpoint, make_task(endpoint),
                                policy=TargetPolicy.create((), production=False))
    assert result.error == "refused_target" and "127.0.0.1" in (result.response_body or "")
    assert receiver.requests == []


@pytest.fixture(scope="module")
def certificate_authority() -> trustme.CA:
    return trustme.CA()


@asynccontextmanager
async def https_receiver(ca: trustme.CA, certified_name: str
                         ) -> AsyncIterator[LoopbackReceiver]:
    """An https receiver on 127.0.0.1 whose certificate names ``certified_name``."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(certified_name).configure_cert(context)
    async with LoopbackReceiver(tls=context) as receiver:
        yield receiver


async def https_delivery(ca: trustme.CA, url: str) -> tuple[DeliveryResult, Endpoint]:
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    endpoint = make_endpoint(url=url)
    result = await deliver_with(endpoint, make_task(endpoint), ssl_context=client_context)
    return result, endpoint


async def test_https_to_a_pinned_address_verifies_the_certificate_of_the_name(
        fake_dns: FakeDNS, certificate_authority: trustme.CA) -> None:
    async with https_receiver(certificate_authority, "hooks.example.test") as receiver:
        fake_dns.answers["hooks.example.test"] = [["127.0.0.1"]]
        result, endpoint = await https_delivery(
            certificate_authority, receiver.url(host="hooks.example.test"))
        assert result.succeeded, result
        assert fake_dns.lookups == {"hooks.example.test": 1}
        [request] = receiver.requests
        assert request.url == endpoint.url
        assert request.headers["host"] == f"hooks.example.test:{receiver.port}"
        verified = Webhook(endpoint.secrets[0].secret).verify(request.body, request.headers)
        assert verified["type"] == "order.shipped"


async def test_https_refuses_a_certificate_for_another_name(
        fake_dns: FakeDNS, certificate_authority: trustme.CA) -> None:
    async with https_receiver(certificate_authority, "someone-else.test") as receiver:
        fake_dns.answers["hooks.example.test"] = [["127.0.0.1"]]
        result, _ = await https_delivery(
            certificate_authority, receiver.url(host="hooks.example.test"))
        assert result.error == "connect", result
        assert "CERTIFICATE_VERIFY_FAILED" in (result.response_body or "")
        assert receiver.requests == []


# --- The delivery timeout bounds the whole attempt -----------------------------------

async def test_a_receiver_trickling_its_answer_is_cut_off_at_the_delivery_timeout() -> None:
    # 1 byte every 0.3 s never trips a per-read timeout; only a bound on the whole
    # attempt ends it. Without one, this attempt would last 6 s and succeed.
    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 20\r\n\r\n")
        for _ in range(20):
            writer.write(b"x")
            await writer.drain()
            await asyncio.sleep(0.3)

    async with raw_server(trickle) as port:
        endpoint = make_endpoint(url=f"http://127.0.0.1:{port}/slow")
        deliverer = Deliverer(LOOPBACK, timeout=1.0)
        try:
            started = time.monotonic()
            result = await deliverer.deliver(make_task(endpoint), endpoint)
            took = time.monotonic() - started
        finally:
            await deliverer.aclose()
    assert not result.succeeded and result.error == "timeout", result
    # uvloop reads its clock once per loop turn, in whole milliseconds, so a 1 s timer
    # can fire a few milliseconds before 1 s of wall time has passed.
    assert 0.99 <= took < 1.5 and 990 <= result.latency_ms < 1500, (took, result)


async def test_a_hanging_dns_lookup_is_cut_off_at_the_delivery_timeout(
        monkeypatch: pytest.MonkeyPatch) -> None:
    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> list[Any]:
        if host == "hanging.test":
            time.sleep(3)  # a resolver that does not answer
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    endpoint = make_endpoint(url="http://hanging.test/hook")
    started = time.monotonic()
    result = await deliver_with(endpoint, make_task(endpoint))  # timeout 2 s
    # a few milliseconds of slack below 2 s, as above
    assert result.error == "timeout" and 1.99 <= time.monotonic() - started < 2.5, result
