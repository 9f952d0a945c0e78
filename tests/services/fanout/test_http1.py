"""The lean HTTP/1.1 pool against raw receivers on loopback: keep-alive reuse, receivers
that close idle connections, answers framed by length, chunks or the connection's end,
bodies over the cap, and answers that are not HTTP. Both event loops."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator

import pytest
import uvloop

from services.fanout.http1 import BODY_CAP, ExchangeFailed, Http1Pool, Target
from tests.services.fanout.test_deliverer import raw_server

LOOPBACK = [ipaddress.ip_address("127.0.0.1")]


@pytest.fixture(params=["asyncio", "uvloop"])
def event_loop_policy(request: pytest.FixtureRequest) -> asyncio.AbstractEventLoopPolicy:
    return uvloop.EventLoopPolicy() if request.param == "uvloop" \
        else asyncio.DefaultEventLoopPolicy()


@pytest.fixture
async def pool() -> AsyncIterator[Http1Pool]:
    opened = Http1Pool()
    yield opened
    opened.close()


class Answering:
    """A raw receiver that reads each request whole and writes ``answers`` in turn (the
    last one again and again), closing the connection after an answer when told."""

    def __init__(self, *answers: bytes, close_after: bool = False) -> None:
        self.answers = list(answers)
        self.close_after = close_after
        self.connections = 0
        self.requests: list[bytes] = []

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                return  # the client closed the connection
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            self.requests.append(head + await reader.readexactly(length))
            writer.write(self.answers.pop(0) if len(self.answers) > 1 else self.answers[0])
            await writer.drain()
            if self.close_after:
                return


async def post(pool: Http1Pool, port: int, body: bytes = b"{}") -> tuple[int, bytes]:
    target = Target.of(f"http://127.0.0.1:{port}/hook?x=1")
    connection = await pool.connect(target, LOOPBACK, None)
    headers = [("Host", target.host_header), ("Content-Length", str(len(body)))]
    answer = await pool.post(connection, target.path, headers, body)
    return answer.status, answer.body


OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


async def test_keep_alive_reuses_one_connection(pool: Http1Pool) -> None:
    receiver = Answering(OK)
    async with raw_server(receiver) as port:
        for _ in range(3):
            assert await post(pool, port) == (200, b"ok")
    assert receiver.connections == 1
    assert receiver.requests[0].startswith(b"POST /hook?x=1 HTTP/1.1\r\nHost: 127.0.0.1:")


async def test_a_connection_the_receiver_closed_while_idle_is_not_reused(
        pool: Http1Pool) -> None:
    receiver = Answering(OK, close_after=True)
    async with raw_server(receiver) as port:
        assert await post(pool, port) == (200, b"ok")
        await asyncio.sleep(0.1)  # the receiver's FIN arrives while the connection is idle
        assert await post(pool, port) == (200, b"ok")
    assert receiver.connections == 2


async def test_connection_close_in_the_answer_is_honoured(pool: Http1Pool) -> None:
    receiver = Answering(b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok")
    async with raw_server(receiver) as port:
        for _ in range(2):
            assert await post(pool, port) == (200, b"ok")
    assert receiver.connections == 2


async def test_chunked_and_until_close_bodies_are_read(pool: Http1Pool) -> None:
    chunked = Answering(b"HTTP/1.1 202 Accepted\r\ntransfer-encoding: chunked\r\n\r\n"
                        b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
    async with raw_server(chunked) as port:
        assert await post(pool, port) == (202, b"abcde")
        assert await post(pool, port) == (202, b"abcde")
    assert chunked.connections == 1
    until_close = Answering(b"HTTP/1.1 500 Oops\r\n\r\nthe end is the close", close_after=True)
    async with raw_server(until_close) as port:
        assert await post(pool, port) == (500, b"the end is the close")


async def test_a_body_over_the_cap_is_cut_and_its_connection_dropped(pool: Http1Pool) -> None:
    connections = 0

    async def answers_in_two_parts(reader: asyncio.StreamReader,
                                   writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while True:
            await reader.readuntil(b"\r\n\r\n")
            await reader.readexactly(2)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % (BODY_CAP * 4)
                         + b"x" * BODY_CAP * 2)
            await writer.drain()
            await asyncio.sleep(0.2)  # the client has its 1 KiB and does not wait for this
            writer.write(b"x" * BODY_CAP * 2)
            await writer.drain()

    async with raw_server(answers_in_two_parts) as port:
        for _ in range(2):
            assert await post(pool, port) == (200, b"x" * BODY_CAP)
    assert connections == 2  # the unread rest would have poisoned the next answer


async def test_an_answer_that_is_not_http_fails_the_exchange(pool: Http1Pool) -> None:
    async with raw_server(Answering(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")) as port:
        with pytest.raises(ExchangeFailed, match="not valid HTTP"):
            await post(pool, port)


async def test_the_request_carries_the_body_and_exactly_the_headers_given(
        pool: Http1Pool) -> None:
    receiver = Answering(OK)
    async with raw_server(receiver) as port:
        target = Target.of(f"http://127.0.0.1:{port}/p%C3%A4th")
        connection = await pool.connect(target, LOOPBACK, None)
        headers = [("Host", target.host_header), ("X-Émoji", "✓"), ("Content-Length", "5")]
        await pool.post(connection, target.path, headers, b"hello")
    assert receiver.requests == [
        f"POST /p%C3%A4th HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Émoji: ✓\r\n"
        "Content-Length: 5\r\n\r\nhello".encode()]


def test_targets_are_parsed_as_the_check_spells_them() -> None:
    target = Target.of("https://faß.test/hook")
    assert (target.tls, target.port, target.server_hostname, target.host_header) == (
        True, 443, "xn--fa-hia.test", "xn--fa-hia.test")
    literal = Target.of("http://[::1]:8080/a?b=c d")
    assert (literal.port, literal.server_hostname, literal.host_header, literal.path) == (
        8080, "::1", "[::1]:8080", "/a?b=c+d")
