"""What an attempt keeps of its headers: the capping and masking rules, then the
deliverer against real receivers on loopback (the request as the receiver got it, the
response's headers, secret custom values masked, nothing when nothing was sent)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from multidict import CIMultiDict

from services.fanout.captured_headers import (
    MAX_RESPONSE_HEADERS,
    request_headers,
    response_headers,
    secret_header_names,
)
from tests.services.fanout.test_deliverer import (
    LoopbackReceiver,
    closed_port,
    deliver_with,
    make_endpoint,
    make_task,
    raw_server,
)
from webhooks.endpoints import MASKED, EndpointHeader

SIGNED = ("webhook-id", "webhook-timestamp", "webhook-signature", "webhook-attempt",
          "webhook-event-type", "content-type", "user-agent")


def wire_size(pairs: list[tuple[str, str]]) -> int:
    return sum(len(n.encode()) + len(v.encode()) + 4 for n, v in pairs)


# --- The rules ----------------------------------------------------------------------

def test_response_headers_within_the_cap_are_kept_whole_in_order() -> None:
    raw = ((b"Content-Type", b"text/plain"), (b"set-cookie", b"a=1"), (b"set-cookie", b"b=2"),
           (b"x-note", "caf\u00e9".encode()))
    assert response_headers(raw) == ([("Content-Type", "text/plain"), ("set-cookie", "a=1"),
                                      ("set-cookie", "b=2"), ("x-note", "caf\u00e9")], False)


def test_response_headers_are_cut_at_4_kib_counted_as_on_the_wire() -> None:
    # 100 headers of 64 bytes each on the wire ("x-nn: ", 56 bytes, CRLF).
    raw = tuple((f"x-{n:02d}".encode(), b"v" * 56) for n in range(100))
    kept, truncated = response_headers(raw)
    assert truncated and wire_size(kept) == MAX_RESPONSE_HEADERS == 64 * len(kept)
    assert kept == [(f"x-{n:02d}", "v" * 56) for n in range(64)]

    # Exactly at the limit: nothing is cut.
    assert response_headers(raw[:64]) == (kept, False)

    # One huge header: its value is cut so that the whole stays within 4 KiB.
    kept, truncated = response_headers(((b"a", b"1"), (b"content-security-policy", b"x" * 9000),
                                        (b"b", b"2")))
    assert truncated and [n for n, _ in kept] == ["a", "content-security-policy"]
    assert wire_size(kept) == MAX_RESPONSE_HEADERS


def test_a_value_cut_inside_a_utf8_character_stays_valid_text() -> None:
    kept, truncated = response_headers(((b"x", "\u00e9".encode() * 5000),))
    assert truncated and kept[0][1].endswith(("\u00e9", "\ufffd"))
    assert wire_size(kept) <= MAX_RESPONSE_HEADERS + 2  # U+FFFD is 3 bytes for the 1 cut


def test_masking_replaces_the_values_of_the_names_given_whatever_their_case() -> None:
    sent = [("Authorization", "Bearer s3cret"), ("x-tenant", "acme"),
            ("webhook-signature", "v1,abc")]
    assert request_headers(sent) == sent
    assert request_headers(sent, frozenset({"authorization"})) == [
        ("Authorization", MASKED), ("x-tenant", "acme"), ("webhook-signature", "v1,abc")]
    assert request_headers(CIMultiDict(sent).items(), frozenset({"x-tenant"}))[1] == (
        "x-tenant", MASKED)


def test_the_mask_of_an_endpoint_is_its_secret_custom_headers() -> None:
    endpoint = make_endpoint().model_copy(update={"headers": [
        EndpointHeader(name="Authorization", value="Bearer s3cret", secret=True),
        EndpointHeader(name="X-Tenant", value="acme")]})
    assert secret_header_names(endpoint) == {"authorization"}
    assert secret_header_names(make_endpoint()) == frozenset()


# --- The deliverer ------------------------------------------------------------------

@pytest.fixture
async def receiver() -> AsyncIterator[LoopbackReceiver]:
    async with LoopbackReceiver() as started:
        yield started


async def test_the_request_headers_are_kept_as_the_receiver_got_them_with_the_response_headers(
        receiver: LoopbackReceiver) -> None:
    receiver.answer = lambda: web.Response(status=202, text="queued", headers={
        "x-request-id": "req-42", "Cache-Control": "no-store"})
    endpoint = make_endpoint(url=receiver.url())
    result = await deliver_with(endpoint, make_task(endpoint, attempt=2))

    [request] = receiver.requests
    sent = {name.lower(): value for name, value in result.request_headers or []}
    assert set(SIGNED) | {"host", "content-length"} <= set(sent)
    assert sent == request.headers  # what the receiver got, signature included
    assert sent["webhook-attempt"] == "2"
    got = dict(result.response_headers or [])
    assert (got["x-request-id"], got["Cache-Control"]) == ("req-42", "no-store")
    assert got["Content-Type"].startswith("text/plain")
    assert not result.response_headers_truncated


async def test_oversized_response_headers_are_cut_at_4_kib(receiver: LoopbackReceiver) -> None:
    receiver.answer = lambda: web.Response(status=500, headers={
        f"x-filler-{n}": "f" * 200 for n in range(40)})  # ~8.9 KiB of headers
    endpoint = make_endpoint(url=receiver.url())
    result = await deliver_with(endpoint, make_task(endpoint))
    assert result.error == "http_status" and result.response_headers_truncated
    # Whole headers up to the one that crosses 4 KiB, and that one cut (unless not even
    # its name fitted).
    kept = result.response_headers or []
    assert MAX_RESPONSE_HEADERS - 220 < wire_size(kept) <= MAX_RESPONSE_HEADERS
    assert [v for n, v in kept if n.startswith("x-filler")][:-1] == ["f" * 200] * (
        len([n for n, _ in kept if n.startswith("x-filler")]) - 1)


async def test_secret_custom_header_values_are_masked_but_sent(
        receiver: LoopbackReceiver) -> None:
    endpoint = make_endpoint(url=receiver.url()).model_copy(update={"headers": [
        EndpointHeader(name="Authorization", value="Bearer s3cret", secret=True),
        EndpointHeader(name="X-Tenant", value="acme")]})
    result = await deliver_with(endpoint, make_task(endpoint))
    [request] = receiver.requests
    assert request.headers["authorization"] == "Bearer s3cret"
    kept = dict(result.request_headers or [])
    assert (kept["Authorization"], kept["X-Tenant"]) == (MASKED, "acme")
    assert "s3cret" not in repr(result)
    assert kept["webhook-signature"] == request.headers["webhook-signature"]


async def test_without_an_answer_the_headers_set_are_kept_and_none_received() -> None:
    endpoint = make_endpoint(url=f"http://127.0.0.1:{closed_port()}/hook")
    refused = await deliver_with(endpoint, make_task(endpoint))
    assert refused.error == "connect" and refused.response_headers is None
    assert {name for name, _ in refused.request_headers or []} == set(SIGNED)

    async def never_answers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await reader.read()

    async with raw_server(never_answers) as port:
        endpoint = make_endpoint(url=f"http://127.0.0.1:{port}/hook")
        timed_out = await deliver_with(endpoint, make_task(endpoint), timeout=0.5)
    assert timed_out.error == "timeout" and timed_out.response_headers is None
    assert dict(timed_out.request_headers or [])["webhook-id"]


async def test_nothing_sent_nothing_kept() -> None:
    endpoint = make_endpoint(url="http://10.0.0.7/hook")
    refused = await deliver_with(endpoint, make_task(endpoint))
    assert refused.error == "refused_target"
    assert (refused.request_headers, refused.response_headers) == (None, None)
