"""Managed API keys: how fast a key created or revoked through the admin API works or
stops working on every replica, and what checking a managed key costs ingest.

Setup: the eventlog and two ingest replicas as ``webhooks serve`` processes on the
benchmark broker. Propagation: ``ROUNDS`` times, a key is created through the eventlog
and each replica is polled (a publish every 5 ms) until it accepts the key; then the key
is revoked and each replica polled until it refuses it. The time runs from sending the
admin request to the last replica's answer, so it includes the admin request itself.

Throughput: ``hey`` with 64 connections posting single events to one ingest replica,
alternating a bootstrap key (``WEBHOOKS_API_KEYS``) and a managed key, three rounds each
(medians compared; the issue asks that managed keys stay within 5 % of bootstrap keys),
and the key check alone in this process (``ApiKeys.lookup``, µs per call).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import httpx

from benchmarks.bench_ingest import SINGLE_CONNECTIONS, _body, run_hey
from benchmarks.context import BenchContext, percentiles, tree_cpu_seconds
from services.localdev.kafka_broker import free_port
from services.localdev.service_process import ServiceProcess
from webhooks.auth import ApiKeys
from webhooks.envelope import utcnow
from webhooks.kafka import KafkaConnection
from webhooks.registry import ApiKeyRecord, Registry, key_digest, new_api_key, new_key_id

ROUNDS = 20
REQUESTS = 20_000
ADMIN = {"Authorization": "Bearer bench-admin"}
EVENT = {"type": "order.created", "data": {"object": {"id": "o_1"}}}


def _until(client: httpx.Client, key: str, status: int, timeout: float = 10.0) -> None:
    """Publish with ``key`` until the replica answers ``status``."""
    deadline = time.monotonic() + timeout
    while client.post("/v1/events", json=EVENT,
                      headers={"Authorization": f"Bearer {key}"}).status_code != status:
        if time.monotonic() > deadline:
            raise RuntimeError(f"no {status} after {timeout}s")
        time.sleep(0.005)


def propagation(eventlog: httpx.Client, replicas: list[httpx.Client]) -> dict[str, Any]:
    """Create → usable everywhere, revoke → refused everywhere, ``ROUNDS`` times."""
    usable, refused = [], []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        created = eventlog.post("/v1/tenants/bench-keys/keys", json={"scopes": ["publish"]},
                                headers=ADMIN).json()
        for replica in replicas:
            _until(replica, created["key"], 202)
        usable.append(time.perf_counter() - started)
        started = time.perf_counter()
        eventlog.delete(f"/v1/tenants/bench-keys/keys/{created['id']}", headers=ADMIN)
        for replica in replicas:
            _until(replica, created["key"], 401)
        refused.append(time.perf_counter() - started)
    return {"create_to_usable_everywhere": percentiles(usable),
            "revoke_to_refused_everywhere": percentiles(refused)}


def throughput(context: BenchContext, ingest: ServiceProcess, managed_key: str
               ) -> dict[str, Any]:
    """hey single events with the bootstrap key and the managed key, alternating."""
    body = _body(context.work_dir, "keys-single.json", EVENT)
    url = ingest.url + "/v1/events"
    assert ingest.process is not None
    runs: dict[str, list[dict[str, Any]]] = {"bootstrap": [], "managed": []}
    run_hey(url, body, 2000, SINGLE_CONNECTIONS)  # warm-up
    for _ in range(3):
        for kind, key in (("bootstrap", "bench-key"), ("managed", managed_key)):
            before = tree_cpu_seconds(ingest.process.pid)
            answer = run_hey(url, body, REQUESTS, SINGLE_CONNECTIONS, auth=False,
                             extra=("-H", f"Authorization: Bearer {key}"))
            answer["cpu_ms_per_event"] = round(
                (tree_cpu_seconds(ingest.process.pid) - before) / REQUESTS * 1000, 4)
            runs[kind].append(answer)
    median = {kind: statistics.median(r["requests_per_s"] or 0 for r in rs)
              for kind, rs in runs.items()}
    return {"runs": runs,
            "median_requests_per_s": {k: round(v, 1) for k, v in median.items()},
            "managed_vs_bootstrap_pct": round((median["managed"] / median["bootstrap"] - 1)
                                              * 100, 1)}


def lookup_cost() -> dict[str, float]:
    """µs per ``ApiKeys.lookup`` of a bootstrap key (3 configured) and of a managed one."""
    view = Registry(KafkaConnection(bootstrap="127.0.0.1:1"), "bench.registry")
    managed = new_api_key()
    now = utcnow()
    view.put_key(ApiKeyRecord(id=new_key_id(), tenant="bench", prefix=managed[:12],
                              sha256=key_digest(managed), scopes=["publish"], created=now))
    keys = ApiKeys({"bench-key": "bench", "other-key": "other", "bench-admin": "*"}, view)
    costs = {}
    for kind, key in (("bootstrap_us", "bench-key"), ("managed_us", managed)):
        calls = 200_000
        started = time.perf_counter()
        for _ in range(calls):
            keys.lookup(key)
        costs[kind] = round((time.perf_counter() - started) / calls * 1e6, 2)
    return costs


def run(context: BenchContext) -> dict[str, Any]:
    settings = context.settings(log_level="warning", ingest_kafka_intake=False)
    settings = settings.model_copy(update={
        "clickhouse_url": settings.clickhouse_url.replace("/clickhouse?", "/clickhouse-keys?")})
    logs = context.work_dir
    services = [ServiceProcess("eventlog", settings, logs / "keys-eventlog.log"),
                ServiceProcess("ingest", settings, logs / "keys-ingest-1.log"),
                ServiceProcess("ingest", settings.model_copy(update={"ingest_port": free_port()}),
                               logs / "keys-ingest-2.log")]
    try:
        for service in services:
            service.start(timeout=180)
        eventlog_server, *ingest_servers = services
        with httpx.Client(base_url=eventlog_server.url, timeout=30) as eventlog:
            replicas = [httpx.Client(base_url=s.url, timeout=30) for s in ingest_servers]
            eventlog.post("/v1/tenants", json={"id": "bench-keys"}, headers=ADMIN)
            eventlog.post("/v1/tenants", json={"id": "bench"}, headers=ADMIN)
            result: dict[str, Any] = {"setup": __doc__.split("\n\n")[1].replace("\n", " ")}
            result["propagation_two_ingest_replicas"] = propagation(eventlog, replicas)
            managed = eventlog.post("/v1/tenants/bench/keys", json={"scopes": ["publish"]},
                                    headers=ADMIN).json()["key"]
            _until(replicas[0], managed, 202)
            result["ingest_single_posts"] = throughput(context, ingest_servers[0], managed)
            result["key_check"] = lookup_cost()
            for replica in replicas:
                replica.close()
        return result
    finally:
        for service in services:
            service.stop()
