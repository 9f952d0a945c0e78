"""The benchmark's webhook receiver, run as its own process: ``python -m benchmarks.receiver PORT``.

A minimal HTTP/1.1 server (uvloop, httptools, keep-alive) so that the receiver costs the
measured processes as little as possible and never shares their CPU accounting. Every
``POST`` is answered ``200 ok`` at once, except under ``/hang/``, which is never answered
(a receiver that hangs until the sender's timeout), under ``/slow/<ms>/``, answered
that many milliseconds later (a receiver with that latency), and under ``/fail/``, answered
``500`` at once (counted apart, as ``failed``). For each delivery it records the path,
the event number ``data.object.n`` and, when the event carries ``data.object.sent_at``
(publish time, epoch seconds), the publish-to-receipt latency. Events numbered below 0
are probes (the benchmark checking that the worker is ready) and are only counted.

``GET /stats`` answers what was recorded as JSON (``GET /counts``: without the
latencies); ``GET /arrivals``: every delivery as ``[received, path, n, sent_at]`` in
arrival order (pauses and duplicates in time); ``POST /reset`` clears it.
"""

from __future__ import annotations

import asyncio
import sys
import time

import httptools
import orjson
import uvloop

OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok"
FAIL = (b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 4\r\n"
        b"content-type: text/plain\r\n\r\nfail")


class Recorder:
    """What the receiver saw since the last reset."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.count = 0
        self.failed = 0
        self.probes = 0
        self.latencies: list[float] = []
        self.distinct: set[tuple[bytes, int]] = set()
        self.first = self.last = 0.0
        self.highest: dict[bytes, int] = {}
        self.out_of_order = 0
        self.arrivals: list[tuple[float, str, int, float | None]] = []

    def record(self, path: bytes, body: bytes) -> None:
        received = time.time()
        try:
            obj = orjson.loads(body)["data"]["object"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            obj = {}
        number = obj.get("n", 0)
        if number < 0:
            self.probes += 1
            return
        self.count += 1
        self.first = self.first or received
        self.last = received
        self.distinct.add((path, number))
        # Arrival order per path: whether an ordered endpoint got its events in order.
        self.out_of_order += number < self.highest.get(path, -1)
        self.highest[path] = max(number, self.highest.get(path, -1))
        sent = obj.get("sent_at")
        if sent is not None:
            self.latencies.append(received - sent)
        self.arrivals.append((received, path.decode(), number, sent))

    def counts(self) -> dict[str, object]:
        return {"count": self.count, "failed": self.failed, "probes": self.probes,
                "distinct": len(self.distinct), "first": self.first, "last": self.last,
                "out_of_order": self.out_of_order}

    def stats(self) -> bytes:
        return orjson.dumps({**self.counts(), "latencies": self.latencies})


class HttpConnection(asyncio.Protocol):
    """One keep-alive connection; httptools calls back as it parses."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url = url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        assert self.transport is not None
        method = self.parser.get_method()
        body, self.body = b"".join(self.body), []
        if method == b"GET" and self.url == b"/stats":
            payload = self.recorder.stats()
            self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                                 b"content-length: %d\r\n\r\n%s" % (len(payload), payload))
        elif method == b"GET" and self.url in (b"/counts", b"/arrivals"):
            payload = orjson.dumps(self.recorder.counts() if self.url == b"/counts"
                                   else self.recorder.arrivals)
            self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                                 b"content-length: %d\r\n\r\n%s" % (len(payload), payload))
        elif method == b"POST" and self.url == b"/reset":
            self.recorder.reset()
            self.transport.write(OK)
        elif self.url.startswith(b"/hang/"):
            return  # never answered: the sender times out
        elif self.url.startswith(b"/slow/"):
            delay_ms = int(self.url.split(b"/")[2])
            asyncio.get_running_loop().call_later(delay_ms / 1000, self._answer, self.url, body)
        elif self.url.startswith(b"/fail/"):
            self.recorder.failed += 1
            self.transport.write(FAIL)
        else:
            self.recorder.record(self.url, body)
            self.transport.write(OK)


    def _answer(self, url: bytes, body: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.recorder.record(url, body)
            self.transport.write(OK)


async def serve(port: int) -> None:
    recorder = Recorder()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: HttpConnection(recorder), "127.0.0.1", port,
                                      backlog=4096)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(serve(int(sys.argv[1])))
