"""Ingest throughput and latency: ``POST /v1/events`` over real HTTP, and the Kafka intake.

HTTP: the real server (``webhooks serve ingest``: uvicorn) in its own process on
loopback, an ``httpx.AsyncClient`` in this process with ``CONCURRENCY`` requests in
flight; latency is request to response (the 202 comes after
the broker's acknowledgement). Three shapes: events without id (one events write plus
the accepted-record write), events with a producer id (plus the idempotency claim round
trip), and batches of 100.

Kafka intake: ``INTAKE_EVENTS`` raw events produced to the ingest topic as fast as the
producer goes; events/s is from the first produce to the last envelope seen on the
events topic; latency is per event, from its produce call to its arrival on the events
topic as seen by a consumer.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import httpx
from confluent_kafka import Consumer

from benchmarks.context import BenchContext, percentiles
from services.localdev.service_process import ServiceProcess
from webhooks.kafka import create_producer
from webhooks.settings import Settings
from webhooks.topics import Topics

HTTP_EVENTS = 2000
BATCHES = 40
BATCH_SIZE = 100
CONCURRENCY = 32
INTAKE_EVENTS = 5000
HEADERS = {"Authorization": "Bearer bench-key"}


async def _post_many(base_url: str, bodies: list[tuple[str, object]]
                     ) -> tuple[float, list[float], int]:
    latencies: list[float] = []
    transport_errors = 0
    queue: asyncio.Queue[tuple[str, object]] = asyncio.Queue()
    for item in bodies:
        queue.put_nowait(item)
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(base_url=base_url, headers=HEADERS, limits=limits,
                                 timeout=httpx.Timeout(30.0)) as client:
        async def worker() -> None:
            nonlocal transport_errors
            while not queue.empty():
                path, body = queue.get_nowait()
                started = time.perf_counter()
                try:
                    response = await client.post(path, json=body)
                except httpx.TransportError:
                    # A dropped keep-alive connection; the request is retried (same body,
                    # so an id-carrying event is not duplicated) and counted.
                    transport_errors += 1
                    queue.put_nowait((path, body))
                    continue
                if response.status_code not in (200, 202):
                    raise RuntimeError(f"{path}: {response.status_code} {response.text}")
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        return time.perf_counter() - started, latencies, transport_errors


def _http(base_url: str, bodies: list[tuple[str, object]], events: int) -> dict[str, object]:
    asyncio.run(_post_many(base_url, bodies[: CONCURRENCY * 2]))  # warm-up, not counted
    elapsed, latencies, errors = asyncio.run(_post_many(base_url, bodies[CONCURRENCY * 2:]))
    counted = events * (len(bodies) - CONCURRENCY * 2) // len(bodies)
    return {"events": counted, "requests": len(latencies), "retried_transport_errors": errors,
            "events_per_s": round(counted / elapsed, 1), **percentiles(latencies)}


def _ingest(context: BenchContext, settings: Settings) -> ServiceProcess:
    """``webhooks serve ingest`` in its own process (its own GIL, as deployed)."""
    return ServiceProcess("ingest", settings.model_copy(update={"log_level": "warning"}),
                          context.work_dir / "ingest.log")


def bench_http(context: BenchContext) -> dict[str, object]:
    settings = context.settings(ingest_kafka_intake=False)
    run = uuid.uuid4().hex[:8]
    plain = [("/v1/events", {"type": "order.shipped", "data": {"n": n}})
             for n in range(HTTP_EVENTS)]
    with_id = [("/v1/events", {"type": "order.shipped", "data": {"n": n},
                               "id": f"evt_{run}{n}"}) for n in range(HTTP_EVENTS)]
    batches = [("/v1/events/batch", {"events": [
        {"type": "order.shipped", "data": {"n": n, "i": i}} for i in range(BATCH_SIZE)]})
        for n in range(BATCHES + CONCURRENCY * 2)]
    with _ingest(context, settings) as server:
        base_url = server.url
        return {
            "without_id": _http(base_url, plain, HTTP_EVENTS),
            "with_id_claimed": _http(base_url, with_id, HTTP_EVENTS),
            f"batch_{BATCH_SIZE}": _http(base_url, batches, len(batches) * BATCH_SIZE),
        }


def bench_intake(context: BenchContext) -> dict[str, object]:
    settings = context.settings()
    topics = Topics.from_settings(settings)
    consumer = Consumer({**settings.kafka.client_config(), "group.id": uuid.uuid4().hex,
                         "auto.offset.reset": "earliest", "fetch.wait.max.ms": 10})
    consumer.subscribe([topics.events])
    with _ingest(context, settings):
        consumer.consume(1, 3.0)  # join the group before the clock starts
        producer = create_producer(settings.kafka)
        started = time.perf_counter()
        for n in range(INTAKE_EVENTS):
            body = {"type": "order.shipped", "tenant": f"t{n % 8}",
                    "data": {"n": n, "sent": time.perf_counter()}}
            while True:
                try:
                    producer.produce(topics.ingest, json.dumps(body).encode())
                    break
                except BufferError:
                    producer.poll(0.05)
            producer.poll(0)
        producer.flush(60)
        latencies: list[float] = []
        deadline = time.monotonic() + 300
        while len(latencies) < INTAKE_EVENTS and time.monotonic() < deadline:
            for message in consumer.consume(1000, 0.5):
                if message.error():
                    continue
                arrived = time.perf_counter()
                latencies.append(arrived - json.loads(message.value())["data"]["sent"])
        elapsed = time.perf_counter() - started
    consumer.close()
    if len(latencies) < INTAKE_EVENTS:
        raise RuntimeError(f"only {len(latencies)} of {INTAKE_EVENTS} intake events arrived")
    return {"events": INTAKE_EVENTS, "events_per_s": round(INTAKE_EVENTS / elapsed, 1),
            **percentiles(latencies)}


def run(context: BenchContext) -> dict[str, object]:
    """Both paths, one after the other, each on fresh topics."""
    return {
        "setup": f"ingest server process (uvicorn) + httpx client process on loopback, "
                 f"{CONCURRENCY} requests in flight; intake: one confluent-kafka producer, "
                 "events spread over 8 tenants",
        "http_post_events": bench_http(context),
        "kafka_intake": bench_intake(context),
    }
