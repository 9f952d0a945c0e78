"""The deliverer's decisions, over httpx.MockTransport; where the network itself is the
point (DNS pinning, TLS with the original name), over real receivers on loopback."""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
import trustme
from standardwebhooks.webhooks import Webhook

from services.fanout.deliverer import (
    MAX_RESPONSE_BODY,
    Deliverer,
    DeliveryResult,
    build_headers,
    parse_retry_after,
)
from tests.support.receiver import Receiver
from webhooks.delivery import DeliveryTask
from webhooks.endpoints import Endpoint, EndpointSecret, new_endpoint_id
from webhooks.envelope import Envelope, utcnow
from webhooks.signing import generate_secret
from webhooks.target_policy import TargetPolicy

LOOPBACK = TargetPolicy.create(("127.0.0.0/8",), production=False)


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


async def deliver_with(handler: httpx.AsyncBaseTransport | None, endpoint: Endpoint,
                       task: DeliveryTask, policy: TargetPolicy = LOOPBACK):
    deliverer = Deliverer(policy, timeout=2.0, transport=handler)
    try:
        return await deliverer.deliver(task, endpoint)
    finally:
        await deliverer.aclose()


async def test_posts_the_exact_envelope_bytes_with_verifiable_standard_headers() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    endpoint = make_endpoint()
    task = make_task(endpoint, attempt=3)
    result = await deliver_with(httpx.MockTransport(handler), endpoint, task)

    assert result.succeeded and result.response_status == 204 and result.error is None
    [request] = seen
    assert request.method == "POST" and str(request.url) == endpoint.url
    assert request.content == task.event.to_json()
    assert request.headers["webhook-id"] == task.event.id
    assert request.headers["webhook-attempt"] == "3"
    assert request.headers["webhook-event-type"] == "order.shipped"
    assert request.headers["content-type"] == "application/json"
    verified = Webhook(endpoint.secrets[0].secret).verify(request.content, dict(request.headers))
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


@pytest.mark.parametrize(("status", "error"), [
    (500, "http_status"), (404, "http_status"), (301, "redirect"), (307, "redirect"),
    (410, "http_status")])
async def test_non_2xx_answers_are_failures_and_redirects_are_not_followed(
        status: int, error: str) -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(str(request.url))
        return httpx.Response(status, headers={"location": "http://169.254.169.254/"},
                              text="nope")

    endpoint = make_endpoint()
    result = await deliver_with(httpx.MockTransport(handler), endpoint, make_task(endpoint))
    assert not result.succeeded
    assert (result.response_status, result.error, result.response_body) == (status, error, "nope")
    assert result.gone == (status == 410)
    assert calls == [endpoint.url]  # one request: the redirect target was never called


@pytest.mark.parametrize(("exception", "error"), [
    (httpx.ReadTimeout("slow"), "timeout"), (httpx.ConnectTimeout("slow"), "timeout"),
    (httpx.ConnectError("refused"), "connect"), (httpx.RemoteProtocolError("bye"), "network")])
async def test_transport_errors_are_classified(exception: Exception, error: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exception

    endpoint = make_endpoint()
    result = await deliver_with(httpx.MockTransport(handler), endpoint, make_task(endpoint))
    assert not result.succeeded and result.error == error and result.response_status is None


async def test_only_the_first_kibibyte_of_the_response_is_kept() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"x" * 100_000)

    endpoint = make_endpoint()
    result = await deliver_with(httpx.MockTransport(handler), endpoint, make_task(endpoint))
    assert result.response_body == "x" * MAX_RESPONSE_BODY


@pytest.mark.parametrize("secret", ["whsec_AAAA", "whsec_AAAAA", "whsec_" + "A" * 200])
async def test_an_unusable_secret_fails_the_attempt_without_a_request(secret: str) -> None:
    # Each matches the schema's pattern, but is not base64 of 24-64 bytes.
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(200)

    endpoint = make_endpoint(secrets=[secret])
    result = await deliver_with(httpx.MockTransport(handler), endpoint, make_task(endpoint))
    assert not result.succeeded and result.error == "endpoint_misconfigured", result
    assert "cannot sign" in (result.response_body or "")
    assert secret not in (result.response_body or "") and calls == []


@pytest.mark.parametrize("url", ["http://10.0.0.7/hook", "http://169.254.169.254/latest",
                                 "http://[::1]:8080/", "ftp://example.com/"])
async def test_private_targets_are_refused_before_any_request(url: str) -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(200)

    endpoint = make_endpoint(url=url)
    result = await deliver_with(httpx.MockTransport(handler), endpoint, make_task(endpoint),
                                policy=TargetPolicy.create((), production=False))
    assert not result.succeeded and result.error == "refused_target"
    assert calls == []


async def test_production_requires_https() -> None:
    endpoint = make_endpoint(url="http://93.184.215.14/hook")
    result = await deliver_with(httpx.MockTransport(lambda r: httpx.Response(200)), endpoint,
                                make_task(endpoint),
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


# --- Real sockets: the connection goes to the address that was checked -------------

@dataclass
class FakeDNS:
    """Answers ``*.test`` names from a table, one answer per lookup (the last repeats)."""

    answers: dict[str, list[str]] = field(default_factory=dict)
    lookups: Counter[str] = field(default_factory=Counter)


@pytest.fixture
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> FakeDNS:
    """Patches ``socket.getaddrinfo`` (which httpx/anyio use too) for ``*.test`` names."""
    dns = FakeDNS()
    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        name = host.decode() if isinstance(host, bytes) else host
        if not (isinstance(name, str) and name.endswith(".test")):
            return real_getaddrinfo(host, port, *args, **kwargs)
        dns.lookups[name] += 1
        answers = dns.answers[name]
        address = answers[min(dns.lookups[name], len(answers)) - 1]
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "",
                 (address, int(port or 0)))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return dns


async def test_a_rebinding_name_cannot_redirect_the_connection(fake_dns: FakeDNS) -> None:
    # The name answers the allow-listed receiver to the first lookup and a private
    # "victim" on the same port after that. A second lookup by httpx at connect time
    # would reach the victim; the deliverer must connect to what it checked.
    allowed = Receiver(host="127.0.0.1").start()
    victim = Receiver(host="127.0.0.2", port=allowed.port).start()
    try:
        fake_dns.answers["rebind.test"] = ["127.0.0.1", "127.0.0.2"]
        endpoint = make_endpoint(url=f"http://rebind.test:{allowed.port}/hook")
        policy = TargetPolicy.create(("127.0.0.1/32",), production=False)

        result = await deliver_with(None, endpoint, make_task(endpoint), policy=policy)
        assert result.succeeded, result
        assert fake_dns.lookups["rebind.test"] == 1
        [request] = allowed.requests
        assert request.headers["host"] == f"rebind.test:{allowed.port}"

        # The next delivery's own check sees the new answer and refuses it.
        result = await deliver_with(None, endpoint, make_task(endpoint), policy=policy)
        assert result.error == "refused_target" and "127.0.0.2" in (result.response_body or "")
        assert victim.requests == []
    finally:
        allowed.stop()
        victim.stop()


@pytest.fixture(scope="module")
def certificate_authority() -> trustme.CA:
    return trustme.CA()


def https_receiver(ca: trustme.CA, certified_name: str) -> Receiver:
    """An https receiver on 127.0.0.1 whose certificate names ``certified_name``."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(certified_name).configure_cert(context)
    return Receiver(host="127.0.0.1", tls=context).start()


async def https_delivery(ca: trustme.CA, url: str) -> tuple[DeliveryResult, Endpoint]:
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    endpoint = make_endpoint(url=url)
    transport = httpx.AsyncHTTPTransport(verify=client_context)
    result = await deliver_with(transport, endpoint, make_task(endpoint), policy=LOOPBACK)
    return result, endpoint


async def test_https_to_a_pinned_address_verifies_the_certificate_of_the_name(
        fake_dns: FakeDNS, certificate_authority: trustme.CA) -> None:
    receiver = https_receiver(certificate_authority, "hooks.example.test")
    try:
        fake_dns.answers["hooks.example.test"] = ["127.0.0.1"]
        result, endpoint = await https_delivery(
            certificate_authority, f"https://hooks.example.test:{receiver.port}/hook")
        assert result.succeeded, result
        [request] = receiver.requests
        assert request.headers["host"] == f"hooks.example.test:{receiver.port}"
        verified = Webhook(endpoint.secrets[0].secret).verify(request.body, request.headers)
        assert verified["type"] == "order.shipped"
    finally:
        receiver.stop()


async def test_https_refuses_a_certificate_for_another_name(
        fake_dns: FakeDNS, certificate_authority: trustme.CA) -> None:
    receiver = https_receiver(certificate_authority, "someone-else.test")
    try:
        fake_dns.answers["hooks.example.test"] = ["127.0.0.1"]
        result, _ = await https_delivery(
            certificate_authority, f"https://hooks.example.test:{receiver.port}/hook")
        assert result.error == "connect"
        assert "CERTIFICATE_VERIFY_FAILED" in (result.response_body or "")
        assert receiver.requests == []
    finally:
        receiver.stop()


# --- The delivery timeout bounds the whole attempt -----------------------------------

async def test_a_receiver_trickling_its_answer_is_cut_off_at_the_delivery_timeout() -> None:
    # 1 byte every 0.3 s never trips httpx's per-read timeout; only a bound on the whole
    # attempt ends it. Without one, this attempt would last 6 s and succeed.
    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 20\r\n\r\n")
        try:
            for _ in range(20):
                writer.write(b"x")
                await writer.drain()
                await asyncio.sleep(0.3)
        except ConnectionError:
            pass  # the deliverer gave up: that is the point
        finally:
            writer.close()

    server = await asyncio.start_server(trickle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    endpoint = make_endpoint(url=f"http://127.0.0.1:{port}/slow")
    deliverer = Deliverer(LOOPBACK, timeout=1.0)
    try:
        started = time.monotonic()
        result = await deliverer.deliver(make_task(endpoint), endpoint)
        took = time.monotonic() - started
    finally:
        await deliverer.aclose()
        server.close()
    assert not result.succeeded and result.error == "timeout", result
    assert 1.0 <= took < 1.5 and 1000 <= result.latency_ms < 1500, (took, result)


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
    result = await deliver_with(None, endpoint, make_task(endpoint))  # timeout 2 s
    assert result.error == "timeout" and 2.0 <= time.monotonic() - started < 2.5, result
