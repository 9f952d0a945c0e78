"""Whole stack: events over HTTP ingest at fixed sustained rates, delivered by the fanout with
the sink running; deliveries/s, publish-to-receipt latency and the CPU of every process.

The whole-stack rig's ``sustained`` phase (``../shared/bench-rig``) in ``make bench``.
Setup: the stack as a user runs it, each service its own ``webhooks serve <name>``
process with the default settings on the benchmark broker (fresh topics, free ports):
ingest, fanout, and the eventlog (sink and API in one process, embedded ClickHouse in a
folder of its own); the receiver in its own process (:mod:`benchmarks.receiver`);
``ENDPOINTS`` endpoints subscribed to ``*``, created through the eventlog's API
(``POST /v1/endpoints``) and proven live by a probe event that reaches all of them through
ingest and the fanout. The load comes from another process (:mod:`benchmarks.stack_load`):
single ``POST /v1/events`` paced at a fixed rate over ``CONNECTIONS`` connections, each
event carrying the time its request was sent.

Scenarios: ``RATES`` events/s x ``ENDPOINTS`` endpoints (1,000 / 2,000 / 3,000
deliveries/s unless ``BENCH_STACK_RATES`` says otherwise), each publishing for
``DURATION`` s (``BENCH_STACK_SECONDS`` overrides it for a quick run) after
``WARMUP_SECONDS`` of the same load, unmeasured and delivered first. A scenario's window
runs from its first POST until every accepted event reached every endpoint (or nothing
arrived for ``STALL_SECONDS``) and the sink has stored everything.
Each reports accepted/s, deliveries/s (first to last arrival), publish-to-receipt
p50/p90/p99/max, missing and duplicate deliveries, the CPU-seconds of every process over
the window (ingest, fanout, eventlog, broker, receiver; the load generator's while it
publishes) and per delivery, with the stack's total (ingest + fanout + eventlog + broker),
and how busy the machine was (``other_processes_cores``: what else ran meanwhile).
A scenario kept up when every event was accepted, nothing is missing and its p99 is at
most ``KEPT_UP_P99_MS``; ``highest_rate_kept_up`` is the highest such rate (events/s).

Ceiling, in the same run and against the same receiver, before the stack starts: ``hey``
(:func:`benchmarks.bench_fanout.hey_ceiling`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from benchmarks.bench_fanout import ReceiverProcess, hey_ceiling
from benchmarks.context import (
    BenchContext,
    busy_cores,
    machine_ticks,
    percentiles,
    tree_cpu_seconds,
)
from services.localdev.kafka_broker import REPO_ROOT, free_port
from services.localdev.service_process import ServiceProcess

RATES = tuple(int(rate) for rate in
              os.environ.get("BENCH_STACK_RATES", "100,200,300").split(","))
"""Events/s of the scenarios; each event goes to every endpoint (``BENCH_STACK_RATES``,
comma-separated, to look past 300 where the machine allows)."""
ENDPOINTS = 10
DURATION = float(os.environ.get("BENCH_STACK_SECONDS", "60"))
"""Seconds of publishing per scenario."""
WARMUP_SECONDS = 5.0
CONNECTIONS = 32
KEPT_UP_P99_MS = 100.0
STALL_SECONDS = 90.0
"""Give up waiting for deliveries after this long without one: more than the first retry
tier (1 min + 10 % jitter), where a delivery deferred by a full endpoint queue waits."""
SINK_TIMEOUT = 60.0
API_KEY = "bench-key"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
SERVICES = ("eventlog", "fanout", "ingest")
STACK = ("ingest", "fanout", "eventlog", "broker")
"""The processes whose CPU is the stack's cost (the receiver and the load are not); every
fanout worker (``fanout-2``…) counts."""


class LoadGenerator:
    """``python -m benchmarks.stack_load``, started and ready; :meth:`run` publishes
    (with ``keys`` in turn; all ``rate * seconds`` events at once if ``burst``)."""

    def __init__(self, ingest_url: str, rate: float, seconds: float, first: int,
                 log_path: Path, keys: Sequence[str] = (API_KEY,), burst: bool = False) -> None:
        self.seconds = seconds
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "benchmarks.stack_load", ingest_url, ",".join(keys),
                 "--rate", f"{rate:g}", "--seconds", f"{seconds:g}",
                 "--connections", str(CONNECTIONS), "--first", str(first),
                 *(["--burst"] if burst else [])],
                cwd=REPO_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                text=True)
        assert self.process.stdout is not None
        if self.process.stdout.readline().strip() != "ready":
            self.stop()
            raise RuntimeError(f"the load generator did not start (see {log_path})")

    def run(self) -> dict[str, Any]:
        """Publish; the load generator's report (see :mod:`benchmarks.stack_load`)."""
        assert self.process.stdin is not None
        self.process.stdin.write("go\n")
        self.process.stdin.flush()
        try:
            output, _ = self.process.communicate(timeout=self.seconds + 120)
        finally:
            self.stop()
        if self.process.returncode:
            raise RuntimeError(f"the load generator exited with {self.process.returncode}")
        return json.loads(output.splitlines()[-1])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


class Stack:
    """The three services (and any further fanout workers: ``fanout-2``…), the receiver
    and the endpoints; a scenario and its meters.

    Each of ``tenants`` has its own API key (``<tenant>-key``) and ``ENDPOINTS`` endpoints;
    the load's events take the tenants in turn. ``overrides``: further settings (e.g.
    ``topic_partitions``)."""

    def __init__(self, context: BenchContext, receiver: ReceiverProcess,
                 tenants: Sequence[str] = ("bench",), **overrides: object) -> None:
        self.keys = {tenant: f"{tenant}-key" for tenant in tenants}
        settings = context.settings(ingest_port=free_port(), eventlog_port=free_port(),
                                    fanout_port=free_port(), log_level="warning",
                                    api_keys={**{key: tenant for tenant, key in self.keys.items()},
                                              "bench-admin": "*"},
                                    **overrides)
        # The embedded ClickHouse opens a folder from one process only, and the event log
        # benchmark may hold the shared one open in this process: the server gets its own.
        self.settings = settings.model_copy(update={
            "clickhouse_url": settings.clickhouse_url.replace("/clickhouse?",
                                                              "/clickhouse-stack?")})
        self.context = context
        self.receiver = receiver
        self.services = {name: ServiceProcess(name, self.settings,
                                              context.work_dir / f"stack-{name}.log")
                         for name in SERVICES}
        self._numbered = 0  # events numbered so far: every load gets numbers of its own

    def __enter__(self) -> Stack:
        try:
            for service in self.services.values():
                service.start(timeout=180)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for service in self.services.values():
            service.stop()

    def add_fanout(self) -> str:
        """Start one more fanout worker (the same consumer group) and wait until it is
        healthy; its name (``fanout-2``, ``fanout-3``…)."""
        name = f"fanout-{sum(1 for name in self.services if name.startswith('fanout')) + 1}"
        self.services[name] = ServiceProcess("fanout", self.settings,
                                             self.context.work_dir / f"stack-{name}.log")
        self.services[name].start(timeout=180)
        return name

    def running_fanouts(self) -> list[str]:
        return [name for name, service in self.services.items() if name.startswith("fanout")
                and service.process is not None and service.process.poll() is None]

    def create_endpoints(self) -> None:
        """``ENDPOINTS`` endpoints on ``*`` per tenant through the API, live once a probe
        reaches all."""
        for tenant, key in self.keys.items():
            for n in range(ENDPOINTS):
                httpx.post(f"{self.services['eventlog'].url}/v1/endpoints", headers=_auth(key),
                           json={"url": self.receiver.url(f"/stack/{tenant}/{n}"),
                                 "events": ["*"]},
                           timeout=30).raise_for_status()
        time.sleep(2)  # the fanout's view applies endpoint changes within about a second
        self._probe()

    def _probe(self, timeout: float = 120.0) -> None:
        """Wait until one event per tenant posted to ingest reaches every endpoint (probes
        are not counted): the view has the endpoints and the fanout's consumer group has
        joined."""
        endpoints = ENDPOINTS * len(self.keys)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.receiver.reset()
            for key in self.keys.values():
                httpx.post(f"{self.services['ingest'].url}/v1/events", headers=_auth(key),
                           json={"type": "bench.probe", "data": {"object": {"n": -1}}},
                           timeout=30).raise_for_status()
            attempt_ends = time.monotonic() + 5
            while time.monotonic() < attempt_ends:
                if self.receiver.stats()["probes"] >= endpoints:
                    return
                time.sleep(0.1)
        raise TimeoutError(f"a probe event did not reach {endpoints} endpoints in "
                           f"{timeout:.0f} s")

    def load(self, rate: float, seconds: float, burst: bool = False) -> LoadGenerator:
        """A load generator of ``rate * seconds`` events, numbered after the last load's
        (all due at once if ``burst``)."""
        first, self._numbered = self._numbered, self._numbered + int(rate * seconds)
        return LoadGenerator(self.services["ingest"].url, rate, seconds, first,
                             self.context.work_dir / "stack-load.log",
                             keys=tuple(self.keys.values()), burst=burst)

    def wait_delivered(self, expected: int) -> dict[str, Any]:
        """The receiver's stats once it has ``expected`` distinct deliveries, or once none
        arrived for ``STALL_SECONDS``."""
        stats = self.receiver.stats()
        progress, last_change = stats["count"], time.monotonic()
        while stats["distinct"] < expected and time.monotonic() - last_change < STALL_SECONDS:
            time.sleep(0.5)
            stats = self.receiver.stats()
            if stats["count"] != progress:
                progress, last_change = stats["count"], time.monotonic()
        return stats

    def wait_sink(self) -> float | None:
        """Seconds until the sink has stored every record of its topics (the eventlog's
        ``webhooks_sink_lag``), None if it has not after ``SINK_TIMEOUT``."""
        started = time.monotonic()
        while time.monotonic() - started < SINK_TIMEOUT:
            lag = self.services["eventlog"].metric_by_label("webhooks_sink_lag", "topic")
            if lag and sum(lag.values()) == 0:
                return round(time.monotonic() - started, 2)
            time.sleep(0.5)
        return None

    def cpu(self) -> dict[str, float]:
        """CPU-seconds so far of every running process of the stack, the broker and the
        receiver, by name."""
        pids = {name: service.process.pid for name, service in self.services.items()
                if service.process and service.process.poll() is None}
        pids.update(broker=self.context.broker_pid, receiver=self.receiver.process.pid)
        return {name: tree_cpu_seconds(pid) for name, pid in pids.items() if pid}

    def scenario(self, rate: float, seconds: float = DURATION) -> dict[str, Any]:
        """``rate`` events/s for ``seconds`` after an unmeasured warm-up, which starts
        once the last scenario's window has ended and is delivered and stored before the
        window starts."""
        self.receiver.reset()
        warm_up = self.load(rate, min(WARMUP_SECONDS, seconds)).run()
        self.wait_delivered(warm_up["accepted"] * ENDPOINTS)
        self.wait_sink()
        measured = self.measure(self.load(rate, seconds))
        latency = measured["latency"]
        return {
            "events_per_s": rate, "endpoints": ENDPOINTS,
            "deliveries_per_s_target": rate * ENDPOINTS, "publish_seconds": seconds,
            **measured,
            "kept_up": (measured["accepted"] == measured["events"] and measured["missing"] == 0
                        and latency.get("p99_ms", float("inf")) <= KEPT_UP_P99_MS)}

    def measure(self, load: LoadGenerator) -> dict[str, Any]:
        """Publish ``load``; its window runs until every accepted event reached its
        endpoints (or nothing arrived for ``STALL_SECONDS``) and the sink stored everything:
        what was accepted and delivered, latencies, and the CPU of every process."""
        self.receiver.reset()
        before, machine_before, started = self.cpu(), machine_ticks(), time.monotonic()
        published = load.run()
        expected = published["accepted"] * ENDPOINTS
        stats = self.wait_delivered(expected)
        sink_s = self.wait_sink()
        after, machine_after = self.cpu(), machine_ticks()
        window = time.monotonic() - started
        cpu_s = {name: round(after[name] - before[name], 2) for name in before}
        cpu_s["load_generator"] = published["cpu_s"]
        received = stats["count"]
        per_delivery = {name: round(seconds / max(received, 1) * 1000, 3)
                        for name, seconds in cpu_s.items()}
        per_delivery["stack"] = round(sum(ms for name, ms in per_delivery.items()
                                          if name.split("-")[0] in STACK), 3)
        span = stats["last"] - stats["first"]
        latency = percentiles(stats["latencies"], (50, 90, 99))
        missing = max(0, expected - stats["distinct"])
        busy = busy_cores(machine_before, machine_after)
        return {
            "events": published["events"], "accepted": published["accepted"],
            "accepted_per_s": published["accepted_per_s"], "publish_status": published["status"],
            "publish_errors": published["errors"], "post_latency": published["post_latency"],
            "load_behind_schedule": published["behind_schedule"],
            "expected": expected, "received": received, "missing": missing,
            "duplicates": received - stats["distinct"],
            "deliveries_per_s": round((received - 1) / span, 1) if span > 0 else None,
            "latency": latency,
            "window_s": round(window, 1), "sink_caught_up_after_s": sink_s,
            "cpu_s": cpu_s, "cpu_ms_per_delivery": per_delivery,
            "machine_busy_cores": round(busy, 2),
            "other_processes_cores": round(max(0.0, busy - sum(cpu_s.values()) / window), 2),
            "load_average": round(os.getloadavg()[0], 1)}


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def run(context: BenchContext) -> dict[str, Any]:
    """The ``hey`` ceiling, then the whole stack at each of ``RATES``."""
    receiver = ReceiverProcess()
    stack = Stack(context, receiver)
    settings = stack.settings
    result: dict[str, Any] = {"setup": (
        "ingest, fanout and eventlog (sink + API, embedded ClickHouse) as `webhooks serve "
        f"<name>` processes with default settings ({settings.topic_partitions} partitions, "
        f"ingest_workers={settings.ingest_workers}, sink_batch_wait="
        f"{settings.sink_batch_wait:g}s, kafka_linger_ms={settings.kafka_linger_ms:g}); "
        f"{ENDPOINTS} endpoints on `*` created through the API; receiver in its own process "
        "(uvloop + httptools); load: single POST /v1/events from another process over "
        f"{CONNECTIONS} connections, paced, {DURATION:g} s per rate after a "
        f"{min(WARMUP_SECONDS, DURATION):g} s warm-up; one local broker"
        + ("" if context.broker_pid else " (external: its CPU is not measured)"))}
    try:
        result["ceiling_hey_receiver"] = hey_ceiling(receiver, context.work_dir)
        with stack:
            stack.create_endpoints()
            for rate in RATES:
                result[f"sustained_{rate}_per_s"] = stack.scenario(rate)
    finally:
        receiver.stop()
    result["highest_rate_kept_up"] = max(
        (rate for rate in RATES if result[f"sustained_{rate}_per_s"]["kept_up"]), default=None)
    return result
