"""Fanout: deliveries/s, CPU per delivery and publish-to-receipt latency, beside its ceilings.

Setup: the real worker (``webhooks serve fanout``, one process) on the benchmark broker;
the receiver in its own process (:mod:`benchmarks.receiver`: uvloop, a minimal HTTP/1.1
server); events published straight to the events topic by this process, each carrying
its publish time. Every endpoint matches every event, so a scenario makes
``events x endpoints`` deliveries. Endpoints and the worker are set up before the timed
window.

Ceilings, in the same run and against the same receiver:

- ``hey`` (compiled, Go) posting the same body with 100 connections: what the receiver
  and the machine allow at all (skipped when ``hey`` is not installed: ``make bench``
  builds it with Go);
- the worker's own delivery client alone (:class:`Deliverer`, same limits, same
  receiver, no Kafka): what the worker could reach if Kafka cost nothing.

Scenarios: a burst (all events published at once) with 1, 10 and 100 endpoints; the same
endpoint counts paced at half the burst's rate; 50 events/s to one endpoint and 1,000
deliveries/s (100 events/s to 10 endpoints), each with the time spent per hop (from the
task and attempt records: publish -> task appended -> attempt started -> answered); 10%
of endpoints hanging (never answering, until the delivery timeout).
Each reports deliveries/s, CPU-seconds per 1,000 deliveries of the worker, the broker and
the receiver, and publish-to-receipt p50/p95/p99. A scenario that received fewer distinct
deliveries than it should reports ``missing`` and fails the run.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from benchmarks.context import BENCH_SECRETS_KEY, BenchContext, cpu_seconds, percentiles
from services.fanout.deliverer import Deliverer
from services.localdev.kafka_broker import REPO_ROOT, free_port
from services.localdev.service_process import ServiceProcess
from webhooks.acked_producer import AckedProducer
from webhooks.delivery import DeliveryTask
from webhooks.endpoints import Endpoint, EndpointSecret, new_endpoint_id
from webhooks.envelope import Envelope, utcnow
from webhooks.kafka import create_consumer
from webhooks.settings import Settings
from webhooks.signing import generate_secret
from webhooks.target_policy import TargetPolicy
from webhooks.topics import Topics

BURST_DELIVERIES = 10_000
PACED_SECONDS = 5.0
LATENCY_SECONDS = 10.0
"""The latency scenarios' length: enough arrivals for a steady p99."""
CEILING_REQUESTS = 10_000
HEY_CONNECTIONS = 100

TARGETS = {
    "deliveries_per_s_10_endpoints": 2000,
    "share_of_client_ceiling": 0.8,
    "worker_cpu_ms_per_delivery": 0.5,
    "paced_1000_per_s_p99_ms": 100,
    "hanging_10pct_healthy_share": 0.9,
    # The latency issue's targets, with events published straight to the events topic.
    "paced_50_per_s_1_endpoint_p50_ms": 5,
    "paced_50_per_s_1_endpoint_p99_ms": 8,
    "paced_1000_per_s_p99_ms_latency_issue": 25,
}


class ReceiverProcess:
    """``python -m benchmarks.receiver PORT`` and its ``/stats``."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process = subprocess.Popen([sys.executable, "-m", "benchmarks.receiver",
                                         str(self.port)], cwd=REPO_ROOT,
                                        stdout=subprocess.PIPE)
        assert self.process.stdout is not None
        self.process.stdout.readline()  # "ready"

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.url("/stats"), timeout=30) as answer:
            return json.loads(answer.read())

    def arrivals(self) -> list[tuple[float, str, int, float | None]]:
        """Every delivery since the last reset: (received, path, n, sent_at), in order."""
        with urllib.request.urlopen(self.url("/arrivals"), timeout=60) as answer:
            return [(at, path, n, sent) for at, path, n, sent in json.loads(answer.read())]

    def reset(self) -> None:
        urllib.request.urlopen(urllib.request.Request(self.url("/reset"), method="POST"),
                               timeout=10).read()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


class Fanout:
    """The worker under test, the receiver, and a producer of events. Its tenants are
    named ``<tenant_prefix><n>``: two of them on the same topics never share a tenant."""

    def __init__(self, settings: Settings, receiver: ReceiverProcess, broker_pid: int | None,
                 worker: ServiceProcess, tenant_prefix: str = "bench") -> None:
        self.settings = settings
        self.tenant_prefix = tenant_prefix
        self.topics = Topics.from_settings(settings)
        self.receiver = receiver
        self.broker_pid = broker_pid
        self.worker = worker
        self.producer = AckedProducer(settings.kafka)
        self._scenarios = 0

    def endpoints(self, count: int, hanging: int = 0,
                  payload_filter: dict[str, Any] | None = None, latency_ms: int = 0,
                  ordered: bool = False) -> str:
        """A tenant with ``count`` endpoints matching everything (the first ``hanging`` of
        them never answer; each with ``payload_filter``, if given; answered ``latency_ms``
        late; ``ordered``); returns the tenant once the worker's view has them."""
        self._scenarios += 1
        tenant = f"{self.tenant_prefix}{self._scenarios}"
        now = utcnow()
        records = []
        for n in range(count):
            path = f"/hang/{tenant}/{n}" if n < hanging else f"/{tenant}/{n}"
            if latency_ms:
                path = f"/slow/{latency_ms}{path}"
            endpoint = Endpoint(id=new_endpoint_id(), tenant=tenant, url=self.receiver.url(path),
                                events=["*"], secrets=[EndpointSecret(secret=generate_secret())],
                                filter=payload_filter, ordered=ordered, created=now,
                                updated=now)
            # Sealed, as the eventlog writes them: the worker opens each secret once.
            records.append((endpoint.id.encode(), endpoint.sealed(BENCH_SECRETS_KEY).to_json()))
        self.producer.produce_all(self.topics.endpoints, records)
        # The view follows the endpoints topic within a second; a probe event proves it.
        self._probe(tenant)
        return tenant

    def _probe(self, tenant: str) -> None:
        """Wait until an event of ``tenant`` reaches a receiver (probes are not counted).

        The worker answers /healthz once its endpoints view is ready, but its consumer
        group may still be joining (seconds to a minute on a fresh broker)."""
        self.receiver.reset()
        deadline = time.monotonic() + 120
        while self.receiver.stats()["probes"] == 0:
            if time.monotonic() > deadline:
                raise TimeoutError("the worker did not deliver a probe event in 120 s")
            self.producer.send(self.topics.events, _event(tenant, -1), key=tenant.encode())
            for _ in range(100):
                if self.receiver.stats()["probes"]:
                    break
                time.sleep(0.1)

    def wait_idle(self, timeout: float = 120.0) -> None:
        """Wait until the worker has committed everything on the topics this scenario
        touched (events, deliveries), so a scenario never starts behind the last one's
        backlog. Retry tiers are left out: hanging endpoints keep tasks there."""
        watched = (self.topics.events, self.topics.deliveries)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lag = self.worker.metric_by_label("webhooks_consumer_lag", "topic")
            if sum(lag.get(topic, 0.0) for topic in watched) == 0:
                return
            time.sleep(0.5)
        raise TimeoutError("the worker did not catch up with its topics")

    def run(self, tenant: str, endpoints: int, events: int, rate: float | None = None,
            healthy: int | None = None, settle: bool = True) -> dict[str, Any]:
        """Publish ``events`` (in one burst, or ``rate`` per second) and wait until every
        healthy endpoint got each of them; first, with ``settle``, until the worker has
        caught up with the previous scenario."""
        healthy = endpoints if healthy is None else healthy
        expected = healthy * events
        if settle:
            self.wait_idle()
        self.receiver.reset()
        before = self._cpu()
        started = time.time()
        if rate is None:
            self.producer.produce_all(self.topics.events, ((tenant.encode(), _event(tenant, n))
                                                           for n in range(events)))
        else:
            for n in range(events):
                self.producer.produce(self.topics.events, _event(tenant, n),
                                      key=tenant.encode())
                time.sleep(max(0.0, started + (n + 1) / rate - time.time()))
        deadline = time.monotonic() + 120
        stats = self.receiver.stats()
        while stats["distinct"] < expected and time.monotonic() < deadline:
            time.sleep(0.1)
            stats = self.receiver.stats()
        after = self._cpu()
        elapsed = max(stats["last"] - started, 1e-9)
        received = stats["count"]
        cpu = {name: round((after[name] - before[name]) / max(received, 1) * 1000, 3)
               for name in before}
        return {"endpoints": endpoints, "events": events,
                "publish": f"{rate:g} events/s" if rate else "one burst",
                "expected": expected, "received": received,
                "missing": expected - stats["distinct"],
                "out_of_order": stats["out_of_order"],
                "deliveries_per_s": round(received / elapsed, 1),
                "cpu_s_per_1000_deliveries": cpu,
                "latency": percentiles(stats["latencies"])}

    def hops(self, tenant: str) -> dict[str, dict[str, float]]:
        """Where the time of ``tenant``'s deliveries went, from the records they left:
        publish -> the first attempt's start (the attempt record's ``timestamp``) -> the
        receiver's answer."""
        sent_at = {event["id"]: event["data"]["object"]["sent_at"]
                   for _, event in self._records(self.topics.events, tenant)}
        dispatched, http = [], []
        for _, attempt in self._records(self.topics.attempts, tenant):
            if attempt["attempt"] != 1 or attempt["event_id"] not in sent_at:
                continue
            started = datetime.fromisoformat(attempt["timestamp"]).timestamp()
            dispatched.append(started - sent_at[attempt["event_id"]])
            http.append(attempt["latency_ms"] / 1000)
        return {"publish_to_attempt_start": percentiles(dispatched),
                "http_attempt": percentiles(http)}

    def _records(self, topic: str, tenant: str) -> list[tuple[float, dict[str, Any]]]:
        """(record timestamp in seconds, document) of ``tenant``'s records on ``topic``."""
        consumer = create_consumer(self.settings.kafka, f"bench-hops-{uuid.uuid4().hex}")
        found = []
        try:
            consumer.subscribe([topic])
            idle_since = time.monotonic()
            while time.monotonic() - idle_since < 2.0:
                message = consumer.poll(0.5)
                if message is None or message.error():
                    continue
                idle_since = time.monotonic()
                document = json.loads(message.value())
                if document.get("tenant") == tenant:
                    found.append((message.timestamp()[1] / 1000, document))
        finally:
            consumer.close()
        return found

    def _cpu(self) -> dict[str, float]:
        pids = {"worker": self.worker.process.pid if self.worker.process else None,
                "broker": self.broker_pid, "receiver": self.receiver.process.pid}
        return {name: cpu_seconds(pid) for name, pid in pids.items() if pid}

    def close(self) -> None:
        self.producer.close()


def _event(tenant: str, n: int) -> bytes:
    return Envelope.create(type="bench.event", tenant=tenant, api_version="2026-11-01",
                           data={"object": {"n": n, "sent_at": time.time(),
                                            "note": "x" * 200}}).to_json()


# -- ceilings ---------------------------------------------------------------------------

def hey_ceiling(receiver: ReceiverProcess, work_dir: Path) -> dict[str, Any]:
    """The compiled load generator's requests/s against the same receiver and body."""
    hey = shutil.which("hey") or str(REPO_ROOT / ".cache" / "bin" / "hey")
    if not os.access(hey, os.X_OK):
        return {"skipped": "hey is not installed (make bench builds it where Go exists)"}
    body = work_dir / "hey-body.json"
    body.write_bytes(_event("ceiling", 0))
    receiver.reset()
    output = subprocess.run([hey, "-n", str(CEILING_REQUESTS * 2), "-c", str(HEY_CONNECTIONS),
                             "-m", "POST", "-T", "application/json", "-D", str(body),
                             receiver.url("/hey")], capture_output=True, text=True,
                            timeout=300).stdout
    found = re.search(r"Requests/sec:\s+([\d.]+)", output)
    return {"tool": "hey", "connections": HEY_CONNECTIONS,
            "requests_per_s": float(found.group(1)) if found else None}


async def client_ceiling(receiver: ReceiverProcess, settings: Settings,
                         endpoints: int) -> dict[str, Any]:
    """The worker's own :class:`Deliverer` alone: ``endpoints`` endpoints, each with the
    worker's per-endpoint limit in flight, under its global limit; no Kafka."""
    deliverer = Deliverer(TargetPolicy.create(("127.0.0.0/8",), production=False),
                          timeout=settings.delivery_timeout,
                          concurrency=settings.delivery_concurrency,
                          keyring=BENCH_SECRETS_KEY)
    now = utcnow()
    targets = [Endpoint(id=new_endpoint_id(), tenant="ceiling", url=receiver.url(f"/c{n}"),
                        events=["*"], secrets=[EndpointSecret(secret=generate_secret())],
                        created=now, updated=now).sealed(BENCH_SECRETS_KEY)
               for n in range(endpoints)]
    tasks = [DeliveryTask.create(Envelope.from_json(_event("ceiling", n)), targets[0].id)
             for n in range(CEILING_REQUESTS)]
    slots = asyncio.Semaphore(settings.delivery_concurrency)
    failures = 0

    async def sender(endpoint: Endpoint, share: list[DeliveryTask]) -> None:
        nonlocal failures
        for task in share:
            async with slots:
                result = await deliverer.deliver(task, endpoint)
            failures += not result.succeeded

    # Warm the pool up (connections, TLS-free here), then time.
    await asyncio.gather(*(deliverer.deliver(tasks[0], target) for target in targets))
    receiver.reset()
    per_sender = [tasks[i::endpoints * settings.endpoint_max_in_flight]
                  for i in range(endpoints * settings.endpoint_max_in_flight)]
    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(sender(targets[i % endpoints], share)
                           for i, share in enumerate(per_sender)))
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    await deliverer.aclose()
    return {"endpoints": endpoints, "requests": CEILING_REQUESTS, "failed": failures,
            "requests_per_s": round(CEILING_REQUESTS / elapsed, 1),
            "client_cpu_ms_per_request": round(cpu / CEILING_REQUESTS * 1000, 3)}


# -- the run ------------------------------------------------------------------------------

def latency_scenarios(fanout: Fanout) -> dict[str, Any]:
    """The latency issue's two paced scenarios, each with its per-hop breakdown."""
    result = {}
    for name, endpoints, rate in (("paced_50_per_s_1_endpoint", 1, 50.0),
                                  ("paced_1000_per_s_10_endpoints", 10, 100.0)):
        # A second of the same traffic first, unmeasured (its own tenant, so that the hops
        # leave it out): the first records after a pause run cold code paths.
        fanout.run(fanout.endpoints(endpoints), endpoints, int(rate), rate=rate)
        tenant = fanout.endpoints(endpoints)
        result[name] = fanout.run(tenant, endpoints, int(rate * LATENCY_SECONDS), rate=rate)
        result[name]["hops"] = fanout.hops(tenant)
    return result


def run(context: BenchContext) -> dict[str, Any]:
    """Ceilings; the latency scenarios with ``kafka_linger_ms=0`` (worker and publisher);
    then every scenario against one worker process with the default settings; then the
    targets (of the default settings)."""
    settings = context.settings(delivery_timeout=5.0, log_level="warning")
    receiver = ReceiverProcess()
    result: dict[str, Any] = {"setup": (
        f"1 fanout worker process, {settings.topic_partitions} partitions, "
        f"delivery_concurrency={settings.delivery_concurrency}, "
        f"endpoint_max_in_flight={settings.endpoint_max_in_flight}, "
        f"delivery_timeout={settings.delivery_timeout:g}s, "
        f"kafka_linger_ms={settings.kafka_linger_ms:g}; receiver in its own process "
        "(uvloop + httptools); events published by the benchmark process")}
    worker = None
    try:
        result["ceiling_hey"] = hey_ceiling(receiver, context.work_dir)
        result["ceiling_delivery_client"] = {
            f"endpoints_{n}": asyncio.run(client_ceiling(receiver, settings, n))
            for n in (1, 10, 100)}
        # The setting that trades broker requests for latency, first (its worker is
        # stopped, its work committed, before the default worker joins the same group).
        no_linger = settings.model_copy(update={"kafka_linger_ms": 0.0})
        worker = ServiceProcess("fanout", no_linger, context.work_dir / "fanout-linger0.log")
        worker.start(timeout=120)
        fanout = Fanout(no_linger, receiver, context.broker_pid, worker, "linger0-")
        try:
            result["kafka_linger_ms_0"] = latency_scenarios(fanout)
            fanout.wait_idle()
        finally:
            fanout.close()
            worker.stop()
        worker = ServiceProcess("fanout", settings, context.work_dir / "fanout-worker.log")
        worker.start(timeout=120)
        fanout = Fanout(settings, receiver, context.broker_pid, worker)
        try:
            result.update(latency_scenarios(fanout))
            for endpoints in (1, 10, 100):
                tenant = fanout.endpoints(endpoints)
                burst = fanout.run(tenant, endpoints, BURST_DELIVERIES // endpoints)
                result[f"burst_{endpoints}_endpoints"] = burst
                rate = burst["deliveries_per_s"] / 2 / endpoints  # events/s
                result[f"paced_half_max_{endpoints}_endpoints"] = fanout.run(
                    tenant, endpoints, max(1, int(rate * PACED_SECONDS)), rate=rate)
            for endpoints in (10, 100):
                hanging = endpoints // 10
                tenant = fanout.endpoints(endpoints, hanging=hanging)
                # The first hanging run leaves its hung tasks (and their events) pending
                # for minutes: the second one starts without waiting for them.
                result[f"hanging_10pct_{endpoints}_endpoints"] = fanout.run(
                    tenant, endpoints, BURST_DELIVERIES // endpoints,
                    healthy=endpoints - hanging, settle=endpoints == 10)
        finally:
            fanout.close()
    finally:
        if worker is not None:
            worker.stop()
        receiver.stop()
    result["targets"] = _targets(result)
    _fail_if_incomplete(result)
    return result


def _targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of the fanout issue with the figure measured in this run."""
    burst10 = result["burst_10_endpoints"]
    ceiling10 = result["ceiling_delivery_client"]["endpoints_10"]["requests_per_s"]
    worker_ms = burst10["cpu_s_per_1000_deliveries"]["worker"]
    paced = result["paced_1000_per_s_10_endpoints"]["latency"].get("p99_ms")
    slow = result["paced_50_per_s_1_endpoint"]["latency"]
    hanging = result["hanging_10pct_10_endpoints"]["deliveries_per_s"]
    # The hanging run has 9 healthy endpoints of 10: compare per healthy endpoint.
    healthy_share = (hanging / 9) / (burst10["deliveries_per_s"] / 10)
    measured = {
        "deliveries_per_s_10_endpoints": burst10["deliveries_per_s"],
        "share_of_client_ceiling": round(burst10["deliveries_per_s"] / ceiling10, 2),
        "worker_cpu_ms_per_delivery": worker_ms,
        "paced_1000_per_s_p99_ms": paced,
        "hanging_10pct_healthy_share": round(healthy_share, 2),
        "paced_50_per_s_1_endpoint_p50_ms": slow["p50_ms"],
        "paced_50_per_s_1_endpoint_p99_ms": slow["p99_ms"],
        "paced_1000_per_s_p99_ms_latency_issue": paced,
    }
    lower_is_better = {"worker_cpu_ms_per_delivery", "paced_1000_per_s_p99_ms",
                       "paced_50_per_s_1_endpoint_p50_ms", "paced_50_per_s_1_endpoint_p99_ms",
                       "paced_1000_per_s_p99_ms_latency_issue"}
    return [{"target": name, "goal": goal, "measured": measured[name],
             "met": measured[name] is not None and (
                 measured[name] <= goal if name in lower_is_better else measured[name] >= goal)}
            for name, goal in TARGETS.items()]


def _fail_if_incomplete(result: dict[str, Any]) -> None:
    """Raise when any scenario got fewer distinct deliveries than it sent."""
    parts = {**result, **{f"kafka_linger_ms_0.{name}": part for name, part
                          in result.get("kafka_linger_ms_0", {}).items()}}
    incomplete = [f"{name}: {part['missing']} missing" for name, part in parts.items()
                  if isinstance(part, dict) and part.get("missing")]
    if incomplete:
        raise RuntimeError("deliveries missing, numbers not valid: " + "; ".join(incomplete))
