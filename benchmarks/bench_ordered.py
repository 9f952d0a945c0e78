"""What ordered delivery costs an endpoint: deliveries/s of one ordered endpoint against
one unordered endpoint, with a receiver answering at once and one answering 20 ms late.

Setup: one fanout worker process, the receiver in its own process, a burst of
:data:`EVENTS` events per scenario published straight to the events topic. An ordered
endpoint gets one delivery in flight at a time, so its rate is bounded by the round trip
(receiver latency + the worker's own time per delivery); an unordered one has up to
``WEBHOOKS_ENDPOINT_MAX_IN_FLIGHT`` in flight. ``out_of_order`` counts deliveries that
arrived after a later event of the same endpoint (0 is required for ordered endpoints).
"""

from __future__ import annotations

from typing import Any

from benchmarks.bench_fanout import Fanout, ReceiverProcess
from benchmarks.context import BenchContext
from services.localdev.service_process import ServiceProcess

EVENTS = 300
LATENCIES_MS = (0, 20)


def run(context: BenchContext) -> dict[str, Any]:
    settings = context.settings(delivery_timeout=5.0, log_level="warning")
    receiver = ReceiverProcess()
    worker = ServiceProcess("fanout", settings, context.work_dir / "fanout-ordered.log")
    result: dict[str, Any] = {"setup": (
        f"1 fanout worker process, a burst of {EVENTS} events to one endpoint per scenario, "
        f"endpoint_max_in_flight={settings.endpoint_max_in_flight}; receiver in its own "
        "process")}
    try:
        worker.start(timeout=120)
        fanout = Fanout(settings, receiver, context.broker_pid, worker, "ordered-")
        try:
            for latency in LATENCIES_MS:
                for ordered in (False, True):
                    tenant = fanout.endpoints(1, latency_ms=latency, ordered=ordered)
                    scenario = fanout.run(tenant, 1, EVENTS)
                    name = f"{'ordered' if ordered else 'unordered'}_receiver_{latency}ms"
                    result[name] = {key: scenario[key] for key in (
                        "deliveries_per_s", "missing", "out_of_order", "latency",
                        "cpu_s_per_1000_deliveries")}
        finally:
            fanout.close()
    finally:
        worker.stop()
        receiver.stop()
    ordered_runs = [v for k, v in result.items() if k.startswith("ordered_")]
    result["void"] = any(r["missing"] or r["out_of_order"] for r in ordered_runs)
    return result
