"""Traces' cost on the hot paths: ingest CPU per POST and fanout CPU per delivery, with
traces off, on at 1 request in 100 sampled, and on for every request.

Setup: for each mode, in turn and for :data:`ROUNDS` rounds (so that the machine's drift
spreads over every mode): a fresh ingest process driven by ``hey`` (:data:`POSTS` single
POSTs, 64 connections, after a warm-up), then a fresh fanout worker delivering a burst of
:data:`EVENTS` events x :data:`ENDPOINTS` endpoints published straight to Kafka (so its
``fanout.match`` spans start traces of their own, sampled at the same ratio). Traces go
over OTLP/HTTP to a collector on loopback (a second benchmark receiver, answering 200).
"With traces off" is today's code path: the only cost is a check of ``tracing.tracer``.
"""

from __future__ import annotations

import statistics
from typing import Any

from benchmarks.bench_fanout import Fanout, ReceiverProcess
from benchmarks.bench_ingest import SINGLE_CONNECTIONS, Ingest, _body, run_hey
from benchmarks.context import BenchContext
from services.localdev.service_process import ServiceProcess

ROUNDS = 2
POSTS = 10_000
EVENTS = 1_000
ENDPOINTS = 10


def modes(collector: ReceiverProcess) -> dict[str, dict[str, str]]:
    """The ``OTEL_*`` environment of each mode."""
    exporting = {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url("")}
    return {"off": {},
            "sampled_1_in_100": {**exporting, "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
                                 "OTEL_TRACES_SAMPLER_ARG": "0.01"},
            "sampled_all": {**exporting, "OTEL_TRACES_SAMPLER": "parentbased_always_on"}}


def ingest_round(context: BenchContext, env: dict[str, str]) -> dict[str, Any]:
    settings = context.settings(ingest_kafka_intake=False, log_level="warning")
    single = _body(context.work_dir, "traced-single.json",
                   {"type": "order.shipped", "data": {"object": {"id": "order_1"}}})
    with Ingest(context, settings, env) as ingest:
        url = ingest.server.url + "/v1/events"
        run_hey(url, single, 1000, SINGLE_CONNECTIONS)  # warm-up
        before = ingest.cpu()
        answer = run_hey(url, single, POSTS, SINGLE_CONNECTIONS)
        return {**answer, "cpu_ms_per_post": ingest.per_1000(before, POSTS)["ingest"]}


def fanout_round(context: BenchContext, receiver: ReceiverProcess, env: dict[str, str]
                 ) -> dict[str, Any]:
    settings = context.settings(delivery_timeout=5.0, log_level="warning")
    worker = ServiceProcess("fanout", settings, context.work_dir / "fanout-traced.log",
                            env=env).start(timeout=120)
    fanout = Fanout(settings, receiver, context.broker_pid, worker)
    try:
        tenant = fanout.endpoints(ENDPOINTS)
        burst = fanout.run(tenant, ENDPOINTS, EVENTS)
    finally:
        fanout.close()
        worker.stop()
    return {"deliveries_per_s": burst["deliveries_per_s"], "missing": burst["missing"],
            "cpu_ms_per_delivery": burst["cpu_s_per_1000_deliveries"]["worker"]}


def run(context: BenchContext) -> dict[str, Any]:
    """Every mode, :data:`ROUNDS` times, interleaved; the medians and their ratio to off."""
    receiver, collector = ReceiverProcess(), ReceiverProcess()
    rounds: dict[str, list[dict[str, Any]]] = {}
    try:
        for _ in range(ROUNDS):
            for mode, env in modes(collector).items():
                rounds.setdefault(mode, []).append({
                    "ingest": ingest_round(context, env),
                    "fanout": fanout_round(context, receiver, env)})
        exported = collector.stats()["count"]
    finally:
        receiver.stop()
        collector.stop()

    def median(mode: str, service: str, figure: str) -> float:
        return statistics.median(r[service][figure] for r in rounds[mode])

    summary = {mode: {
        "ingest_cpu_ms_per_post": median(mode, "ingest", "cpu_ms_per_post"),
        "ingest_posts_per_s": median(mode, "ingest", "requests_per_s"),
        "fanout_cpu_ms_per_delivery": median(mode, "fanout", "cpu_ms_per_delivery"),
        "fanout_deliveries_per_s": median(mode, "fanout", "deliveries_per_s")}
        for mode in rounds}
    for figures in summary.values():
        figures["ingest_cpu_vs_off"] = round(
            figures["ingest_cpu_ms_per_post"] / summary["off"]["ingest_cpu_ms_per_post"], 3)
        figures["fanout_cpu_vs_off"] = round(
            figures["fanout_cpu_ms_per_delivery"]
            / summary["off"]["fanout_cpu_ms_per_delivery"], 3)
    return {"setup": (f"{ROUNDS} rounds of every mode, interleaved; ingest: {POSTS} single "
                      f"POSTs with hey, {SINGLE_CONNECTIONS} connections; fanout: a burst "
                      f"of {EVENTS} events x {ENDPOINTS} endpoints; OTLP/HTTP to a "
                      "collector on loopback"),
            "summary": summary, "rounds": rounds, "export_requests": exported,
            "void": any(r["fanout"]["missing"] for rs in rounds.values() for r in rs)}
