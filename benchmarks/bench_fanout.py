"""Fanout throughput and publish-to-receiver latency with 1, 10 and 100 endpoints.

Setup: the real worker (``webhooks serve fanout``, one process) on the benchmark
broker; an aiohttp receiver on loopback in this process; events published in one burst
per scenario, each carrying its publish time. Every endpoint matches every event, so a
scenario makes ``events x endpoints`` deliveries. Reported: deliveries/s from the first
publish to the last receipt, and p50/p99 latency from publish to receipt.

Then the same endpoint counts with events paced at about 100 deliveries/s, which shows
latency without a burst's queueing.

Beside it, the ceiling: the same ``Deliverer`` (same httpx client settings) posting to
the same receiver with the same concurrency, no Kafka in between.

A scenario that delivers fewer than it should says so (``missing``), and the run then
fails: throughput of a run that lost deliveries means nothing.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from typing import Any

from aiohttp import web

from benchmarks.context import BenchContext, percentiles
from services.fanout.deliverer import Deliverer
from services.localdev.kafka_broker import free_port
from services.localdev.service_process import ServiceProcess
from webhooks.delivery import DeliveryTask
from webhooks.endpoints import Endpoint, EndpointSecret, new_endpoint_id
from webhooks.envelope import Envelope, utcnow
from webhooks.kafka import create_producer
from webhooks.settings import Settings
from webhooks.signing import generate_secret
from webhooks.target_policy import TargetPolicy
from webhooks.topics import Topics

SCENARIOS = ((1, 2000), (10, 300), (100, 40))  # (endpoints, events): 2000-4000 deliveries
# (endpoints, events, events per second): ~100 deliveries/s, well below saturation, to show
# latency without the queueing of a burst.
PACED = ((1, 300, 100.0), (10, 100, 10.0), (100, 10, 1.0))
CEILING_REQUESTS = 3000


class BenchReceiver:
    """aiohttp on loopback, in its own thread and loop: records (publish time, receipt time)."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []
        self.count = 0
        self.distinct: set[tuple[str, int]] = set()
        """(path, event number) pairs received: redeliveries count once."""
        self.port = free_port()
        self._ready = threading.Event()

    def start(self) -> BenchReceiver:
        threading.Thread(target=self._run, daemon=True).start()
        self._ready.wait(10)
        return self

    def _run(self) -> None:
        async def handle(request: web.Request) -> web.Response:
            body = await request.json()
            received = time.time()
            sent = body["data"]["object"].get("sent_at")
            if sent is not None:
                self.samples.append((sent, received))
            self.count += 1
            self.distinct.add((request.path, body["data"]["object"]["n"]))
            return web.Response(text="ok")

        async def serve() -> None:
            app = web.Application()
            app.router.add_post("/{tail:.*}", handle)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", self.port, backlog=1024).start()
            self._ready.set()
            await asyncio.Event().wait()

        asyncio.run(serve())

    def reset(self) -> None:
        self.samples = []
        self.count = 0
        self.distinct = set()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


def _scenario(settings: Settings, receiver: BenchReceiver, endpoints: int,
              events: int, rate: float | None = None) -> dict[str, Any]:
    topics = Topics.from_settings(settings)
    producer = create_producer(settings.kafka)
    tenant = f"bench{endpoints}{'paced' if rate else ''}"
    now = utcnow()
    for n in range(endpoints):
        endpoint = Endpoint(id=new_endpoint_id(), tenant=tenant, url=receiver.url(f"/{n}"),
                            events=["*"], secrets=[EndpointSecret(secret=generate_secret())],
                            created=now, updated=now)
        producer.produce(topics.endpoints, endpoint.to_json(), key=endpoint.id.encode())
    producer.flush(30)
    time.sleep(3)  # the view follows the endpoints topic within seconds
    receiver.reset()
    started = time.time()
    for n in range(events):
        envelope = Envelope.create(type="bench.event", tenant=tenant,
                                   data={"object": {"n": n, "sent_at": time.time()}},
                                   api_version=settings.api_version)
        producer.produce(topics.events, envelope.to_json(), key=tenant.encode())
        producer.poll(0)
        if rate:
            producer.flush(5)
            time.sleep(max(0.0, started + (n + 1) / rate - time.time()))
    producer.flush(30)
    expected = endpoints * events
    deadline = time.monotonic() + 180
    while len(receiver.distinct) < expected and time.monotonic() < deadline:
        time.sleep(0.05)
    samples = list(receiver.samples)
    finished = max((received for _, received in samples), default=time.time())
    return {"endpoints": endpoints, "events": events, "deliveries": len(samples),
            "publish_rate": f"{rate} events/s" if rate else "one burst",
            "expected": expected, "missing": expected - len(receiver.distinct),
            "deliveries_per_s": round(len(samples) / max(finished - started, 1e-9), 1),
            "latency": percentiles([received - sent for sent, received in samples])}


async def _ceiling(receiver: BenchReceiver, endpoints: int, per_endpoint: int,
                   concurrency: int, timeout: float) -> dict[str, Any]:
    """``endpoints x per_endpoint`` senders posting back to back through one Deliverer,
    at most ``concurrency`` at a time overall (the worker's global limit)."""
    deliverer = Deliverer(TargetPolicy.create(("127.0.0.0/8",), production=False),
                          timeout=timeout, connections_per_endpoint=per_endpoint)
    in_flight = asyncio.Semaphore(concurrency)
    now = utcnow()
    targets = [Endpoint(id=new_endpoint_id(), tenant="ceiling", url=receiver.url(f"/c{n}"),
                        events=["*"], secrets=[EndpointSecret(secret=generate_secret())],
                        created=now, updated=now) for n in range(endpoints)]
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(CEILING_REQUESTS):
        queue.put_nowait(n)
    receiver.reset()

    failures: Counter[str] = Counter()

    async def sender(endpoint: Endpoint) -> None:
        while not queue.empty():
            n = queue.get_nowait()
            async with in_flight:
                # Stamped once in flight: the ceiling measures requests, not the queue.
                envelope = Envelope.create(type="bench.event", tenant="ceiling",
                                           data={"object": {"n": n, "sent_at": time.time()}},
                                           api_version="2026-11-01")
                result = await deliverer.deliver(DeliveryTask.create(envelope, endpoint.id),
                                                 endpoint)
            if not result.succeeded:
                failures[result.error or "unknown"] += 1

    started = time.time()
    await asyncio.gather(*(sender(endpoint) for endpoint in targets
                           for _ in range(per_endpoint)))
    elapsed = time.time() - started
    await deliverer.aclose()
    samples = list(receiver.samples)
    return {"requests": len(samples), "endpoints": endpoints,
            "missing": CEILING_REQUESTS - len(receiver.distinct), "failed": dict(failures),
            "concurrency": min(endpoints * per_endpoint, concurrency),
            "requests_per_s": round(len(samples) / elapsed, 1),
            "latency": percentiles([received - sent for sent, received in samples])}


def run(context: BenchContext) -> dict[str, Any]:
    """Ceiling first, then the three fanout scenarios against one worker process."""
    settings = context.settings(delivery_timeout=15.0, log_level="warning")
    receiver = BenchReceiver().start()
    # The ceiling runs with the worker's per-endpoint and global limits, for the endpoint
    # counts of the Kafka scenarios, so the comparison is like for like.
    result: dict[str, Any] = {
        "setup": (f"1 fanout worker process, {settings.topic_partitions} partitions, "
                  f"delivery_concurrency={settings.delivery_concurrency}, "
                  f"endpoint_max_in_flight={settings.endpoint_max_in_flight}, aiohttp "
                  "receiver on loopback in the benchmark process, events published in one "
                  "burst per scenario"),
        "ceiling_same_client_no_kafka": [
            asyncio.run(_ceiling(receiver, endpoints, settings.endpoint_max_in_flight,
                                 settings.delivery_concurrency, settings.delivery_timeout))
            for endpoints, _ in SCENARIOS],
    }
    log = context.work_dir / "fanout-worker.log"
    worker = ServiceProcess("fanout", settings, log).start(timeout=120)
    try:
        for endpoints, events in SCENARIOS:
            result[f"endpoints_{endpoints}"] = _scenario(settings, receiver, endpoints, events)
        for endpoints, events, rate in PACED:
            result[f"endpoints_{endpoints}_paced"] = _scenario(settings, receiver, endpoints,
                                                               events, rate)
    finally:
        worker.stop()
    _fail_if_incomplete(result)
    return result


def _fail_if_incomplete(result: dict[str, Any]) -> None:
    """Raise when any part of the run got fewer deliveries than it sent."""
    parts = [(f"endpoints_{part['endpoints']} ceiling", part)
             for part in result["ceiling_same_client_no_kafka"]]
    parts += [(name, part) for name, part in result.items() if name.startswith("endpoints_")]
    incomplete = [f"{name}: {part['missing']} missing" for name, part in parts if part["missing"]]
    if incomplete:
        raise RuntimeError("deliveries missing, numbers not valid: " + "; ".join(incomplete))
