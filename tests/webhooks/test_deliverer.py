"""The deliverer's decisions, over httpx.MockTransport (real receivers are in the
fanout service tests)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from webhooks.deliverer import MAX_RESPONSE_BODY, Deliverer, build_headers, parse_retry_after
from webhooks.delivery import DeliveryTask
from webhooks.endpoints import Endpoint, EndpointSecret, new_endpoint_id
from webhooks.envelope import Envelope, format_timestamp, utcnow
from webhooks.signing import generate_secret
from webhooks.targets import TargetPolicy

LOOPBACK = TargetPolicy.create(("127.0.0.0/8",), production=False)


def make_endpoint(url: str = "http://127.0.0.1:9/hook", secrets: list[str] | None = None,
                  expires: list[str | None] | None = None) -> Endpoint:
    secrets = secrets or [generate_secret()]
    expires = expires or [None] * len(secrets)
    now = format_timestamp(utcnow())
    return Endpoint(id=new_endpoint_id(), tenant="acme", url=url, events=["*"],
                    secrets=[EndpointSecret(secret=s, expires=e)
                             for s, e in zip(secrets, expires, strict=True)],
                    created=now, updated=now)


def make_task(endpoint: Endpoint, attempt: int = 1) -> DeliveryTask:
    event = Envelope.create(type="order.shipped", tenant="acme", api_version="2026-11-01",
                            data={"object": {"id": "order_1", "note": "héllo"}})
    return DeliveryTask.create(event, endpoint.id).model_copy(update={"attempt": attempt})


async def deliver_with(handler: httpx.MockTransport | None, endpoint: Endpoint,
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
        None, format_timestamp(now + timedelta(hours=1)),
        format_timestamp(now - timedelta(seconds=1))])
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
