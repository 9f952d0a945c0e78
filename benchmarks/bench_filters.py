"""What payload filters cost the fanout: 100 endpoints each holding a 3-clause filter
(that every event passes) against the same 100 endpoints without filters.

Setup: one fanout worker process, the receiver in its own process, events published
straight to the events topic in bursts of 100 events (10,000 deliveries); the two
variants alternate, three runs each, and the medians are compared (the issue's target:
filtered deliveries/s within 10 % of unfiltered). Then the matching step alone, in this
process: µs per event for the 100 endpoints, with and without the filter.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from benchmarks.bench_fanout import Fanout, ReceiverProcess
from benchmarks.context import BenchContext
from services.fanout.endpoint_view import EndpointView
from services.localdev.service_process import ServiceProcess
from webhooks.endpoints import Endpoint, EndpointSecret, new_endpoint_id
from webhooks.envelope import Envelope, utcnow
from webhooks.kafka import KafkaConnection
from webhooks.signing import generate_secret

ENDPOINTS = 100
EVENTS = 100
ROUNDS = 3
# Three clauses every benchmark event passes: an exact field, a comparison, an existence.
FILTER = {"type": "bench.event", "data.object.n": {"$gte": -1},  # -1: the probe
          "data.object.note": {"$exist": True}}


def run(context: BenchContext) -> dict[str, Any]:
    settings = context.settings(delivery_timeout=5.0, log_level="warning")
    receiver = ReceiverProcess()
    worker = ServiceProcess("fanout", settings, context.work_dir / "fanout-filters.log")
    runs: dict[str, list[dict[str, Any]]] = {"unfiltered": [], "filtered": []}
    try:
        worker.start(timeout=120)
        fanout = Fanout(settings, receiver, context.broker_pid, worker, "filters-")
        try:
            tenants = {"unfiltered": fanout.endpoints(ENDPOINTS),
                       "filtered": fanout.endpoints(ENDPOINTS, payload_filter=FILTER)}
            fanout.run(tenants["unfiltered"], ENDPOINTS, EVENTS)  # warm-up
            for _ in range(ROUNDS):
                for kind, tenant in tenants.items():
                    runs[kind].append(fanout.run(tenant, ENDPOINTS, EVENTS))
        finally:
            fanout.close()
    finally:
        worker.stop()
        receiver.stop()
    median = {kind: statistics.median(r["deliveries_per_s"] for r in rs)
              for kind, rs in runs.items()}
    return {"setup": __doc__.split("\n\n")[1].replace("\n", " "), "filter": FILTER,
            "runs": runs, "median_deliveries_per_s": median,
            "filtered_vs_unfiltered_pct": round((median["filtered"] / median["unfiltered"] - 1)
                                                * 100, 1),
            "missing": sum(r["missing"] for rs in runs.values() for r in rs),
            "matching_per_event_100_endpoints": matching_cost()}


def matching_cost(rounds: int = 2000) -> dict[str, float]:
    """µs of ``EndpointView.matching`` per event for 100 endpoints, without and with the
    filter, in this process (no Kafka involved: the view is filled directly)."""
    costs = {}
    for kind, payload_filter in (("unfiltered_us", None), ("filtered_us", FILTER)):
        view = EndpointView(KafkaConnection(bootstrap="127.0.0.1:1"), "bench.endpoints")
        now = utcnow()
        for _ in range(ENDPOINTS):
            view.put(Endpoint(id=new_endpoint_id(), tenant="b", url="https://example.com/",
                              events=["*"], secrets=[EndpointSecret(secret=generate_secret())],
                              filter=payload_filter, created=now, updated=now))
        events = [Envelope.create(type="bench.event", tenant="b", api_version="2026-11-01",
                                  data={"object": {"n": n, "note": "x" * 200}})
                  for n in range(rounds)]
        started = time.perf_counter()
        for event in events:
            view.matching(event)
        costs[kind] = round((time.perf_counter() - started) / rounds * 1e6, 1)
    return costs
