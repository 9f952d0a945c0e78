"""More fanout workers, the pause a worker joining or leaving costs, and what more topic
partitions cost one worker: ``python -m benchmarks scaling`` (opt-in, ~30 minutes;
``BENCH_SCALING_SECONDS`` shortens it, ``BENCH_SCALING_PARTS`` picks parts).

Setup: the whole stack as :mod:`benchmarks.bench_stack` runs it (its :class:`Stack`): each
service a ``webhooks serve <name>`` process with the default settings on the benchmark
broker, the eventlog's sink running, the receiver and the load generator each in its own
process, events single ``POST /v1/events`` over HTTP. Events are keyed by tenant, so one
tenant's events all land on one partition: the load takes ``TENANTS`` tenants in turn,
chosen so that they cover every partition of a 24-partition topic once (and so 6 and 12
partitions evenly too, :func:`spread_tenants`), each with ``ENDPOINTS`` endpoints on ``*``:
every event goes to 10 endpoints, as in ``bench_stack``. Extra fanout workers are more
``webhooks serve fanout`` processes of the same consumer group.

Parts (``BENCH_SCALING_PARTS``, comma-separated; all three unless told):

- ``workers``: one stack, default ``WEBHOOKS_TOPIC_PARTITIONS`` (12; 6 in the published
  run), with 1, then 2, then 3 fanout workers: each of ``RATES`` events/s for
  ``SECONDS`` (``bench_stack``'s scenario: deliveries/s, publish-to-receipt p50/p90/p99,
  CPU of every process per delivery), a burst of ``BURST_EVENTS`` events as fast as
  ingest takes them (deliveries/s from the first arrival to the last), then
  ``IDLE_SECONDS`` with no load (CPU of every process, in cores).
  ``fanouts_cpu_ms_per_delivery`` sums the fanout workers.
- ``rebalance``: the same stack back to one worker, ``REBALANCE_RATE`` events/s for five
  stretches of ``SEGMENT_SECONDS``: steady; a second worker starts (join); the first gets
  SIGTERM (leave); a third starts (join again); the second gets SIGKILL (kill). Per
  stretch (:func:`stretches`): the longest gap between two deliveries in a row at the
  receiver, over all deliveries and within one partition of the events topic (the worst
  one: a killed worker's partitions stop until its 10 s session timeout ends while the
  others go on), duplicate deliveries arriving in it, its slowest delivery, and how long
  the consumer group took to be stable again; deliveries missing at the end (must be 0:
  the result says ``failed`` otherwise).
- ``partitions``: for each of ``PARTITION_COUNTS`` in turn, a fresh stack with every topic
  of that many partitions and one worker: ``LIGHT_RATE`` events/s for ``SECONDS``, then
  idle. ``BENCH_SCALING_PARTITIONS`` (e.g. ``6,12,24,24,12,6``, which evens out a drift of
  the machine) overrides the counts; they should divide ``TENANTS`` (24) so that the
  events spread evenly.

Each fresh stack first takes ``WARMUP_RATE`` events/s for ``WARMUP_SECONDS``, unmeasured
(:func:`warm_up`).

Every figure comes with how busy the machine was (``machine_busy_cores``: every process;
``other_processes_cores``: what was not the benchmark's; the load average): it is shared.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

from aiokafka.partitioner import murmur2
from confluent_kafka import ConsumerGroupState, KafkaException

from benchmarks.bench_fanout import ReceiverProcess, hey_ceiling
from benchmarks.bench_stack import ENDPOINTS, STACK, Stack
from benchmarks.context import BenchContext, busy_cores, machine_ticks
from webhooks.kafka import create_admin

SECONDS = float(os.environ.get("BENCH_SCALING_SECONDS", "60"))
"""Seconds of publishing per sustained rate (and per light rate of the partitions part)."""
PARTS = tuple(os.environ.get("BENCH_SCALING_PARTS", "workers,rebalance,partitions").split(","))
WORKERS = (1, 2, 3)
RATES = (100, 200)
"""Events/s of the workers part: 1,000 deliveries/s, which one worker keeps up with on 2
cores, and 2,000, which it does not."""
BURST_EVENTS = 2000
IDLE_SECONDS = min(30.0, SECONDS / 2)
IDLE_SETTLE_SECONDS = 5.0
"""Before an idle measurement: the sink's last batch, the last commits."""
REBALANCE_RATE = 100
SEGMENT_SECONDS = max(15.0, min(25.0, SECONDS / 2))
"""Each stretch of the rebalance part: longer than the session timeout (10 s) and the
rebalance after it, so that a kill's pause ends within its stretch."""
WARMUP_RATE = 100
WARMUP_SECONDS = min(30.0, SECONDS)
"""Unmeasured load on every fresh stack before its first figure (see :func:`warm_up`)."""
PARTITION_COUNTS = tuple(int(count) for count in
                         os.environ.get("BENCH_SCALING_PARTITIONS", "6,12,24").split(","))
LIGHT_RATE = 50
TENANTS = 24
GROUP_TIMEOUT = 90.0


class Arrival(NamedTuple):
    """One delivery at the receiver: when, where, which event, and when it was published."""

    at: float
    path: str
    n: int
    sent: float | None


def partition_of(key: str, partitions: int) -> int:
    """The partition a record keyed ``key`` lands on (the Java client's murmur2, as every
    producer of the platform partitions)."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


def spread_tenants(count: int) -> list[str]:
    """``count`` tenant names (``t<n>``) whose events land on ``count`` different
    partitions of a ``count``-partition topic, so evenly on any partition count that
    divides ``count`` too."""
    found: dict[int, str] = {}
    n = 0
    while len(found) < count:
        found.setdefault(partition_of(f"t{n}", count), f"t{n}")
        n += 1
    return [found[partition] for partition in range(count)]


def longest_gap(times: Sequence[float], start: float, stop: float) -> float:
    """The longest time between two deliveries in a row (``times`` in order) of which the
    second arrived in [``start``, ``stop``): a pause counts where it ends, since the one an
    action causes starts just before or after it and ends after it."""
    return max((b - a for a, b in zip(times, times[1:], strict=False) if start <= b < stop),
               default=0.0)


def stretches(arrivals: Sequence[Arrival], marks: Sequence[tuple[str, float]],
              lane: Callable[[str], Hashable]) -> dict[str, dict[str, float | int]]:
    """Per named stretch (each from its mark to the next, the last to the end), the
    longest gap between deliveries in a row over all deliveries (``longest_gap_s``) and
    within the worst lane (``lane`` of a delivery's path, e.g. its partition;
    ``longest_lane_gap_s``), deliveries repeating an earlier one (same path and event)
    that arrived in it (``duplicates``), and the longest publish-to-receipt of those that
    arrived in it (``slowest_s``)."""
    ordered = sorted(arrivals)
    seen: set[tuple[str, int]] = set()
    repeats: list[float] = []
    lanes: dict[Hashable, list[float]] = {}
    for arrival in ordered:
        if (arrival.path, arrival.n) in seen:
            repeats.append(arrival.at)
        seen.add((arrival.path, arrival.n))
        lanes.setdefault(lane(arrival.path), []).append(arrival.at)
    times = [arrival.at for arrival in ordered]
    bounds = [*marks, ("", float("inf"))]
    result = {}
    for (name, start), (_, stop) in zip(bounds, bounds[1:], strict=False):
        result[name] = {
            "longest_gap_s": round(longest_gap(times, start, stop), 2),
            "longest_lane_gap_s": round(max((longest_gap(lane_times, start, stop)
                                             for lane_times in lanes.values()), default=0.0), 2),
            "duplicates": sum(1 for at in repeats if start <= at < stop),
            "slowest_s": round(max((a.at - a.sent for a in ordered
                                    if start <= a.at < stop and a.sent is not None),
                                   default=0.0), 2)}
    return result


def wait_group(stack: Stack, members: int, timeout: float = GROUP_TIMEOUT) -> float | None:
    """Seconds until the fanout's consumer group is stable with ``members`` members; None
    if it is not within ``timeout``."""
    admin = create_admin(stack.settings.kafka)
    group = f"{stack.settings.topic_prefix}-fanout"  # the Faust app's id
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        (future,) = admin.describe_consumer_groups([group]).values()
        try:
            described = future.result()
            if described.state == ConsumerGroupState.STABLE and len(described.members) == members:
                return round(time.monotonic() - started, 2)
        except KafkaException:  # e.g. the coordinator still loading the group
            pass
        time.sleep(0.2)
    return None


def warm_up(stack: Stack) -> None:
    """``WARMUP_RATE`` events/s for ``WARMUP_SECONDS``, delivered and stored, unmeasured:
    a fresh broker compiles its hot paths for minutes, and the first figures of a fresh
    stack would pay for that (and for the services' first-use caches) where later ones do
    not."""
    stack.receiver.reset()
    published = stack.load(WARMUP_RATE, WARMUP_SECONDS).run()
    stack.wait_delivered(published["accepted"] * ENDPOINTS)
    stack.wait_sink()


def idle(stack: Stack, seconds: float) -> dict[str, Any]:
    """Every process's CPU in cores over ``seconds`` with nothing published, after
    ``IDLE_SETTLE_SECONDS``; ``stack`` sums the stack's processes."""
    time.sleep(IDLE_SETTLE_SECONDS)
    before, ticks, started = stack.cpu(), machine_ticks(), time.monotonic()
    time.sleep(seconds)
    after, elapsed = stack.cpu(), time.monotonic() - started
    cores = {name: round((after[name] - before[name]) / elapsed, 3) for name in before}
    cores["stack"] = round(sum(c for name, c in cores.items() if name.split("-")[0] in STACK), 3)
    return {"seconds": round(elapsed, 1), "cores": cores,
            "machine_busy_cores": round(busy_cores(ticks, machine_ticks()), 2),
            "load_average": round(os.getloadavg()[0], 1)}


def with_fanouts_summed(measured: dict[str, Any]) -> dict[str, Any]:
    """``measured`` (a :meth:`Stack.measure`) with the fanout workers' CPU per delivery
    summed (``fanouts_cpu_ms_per_delivery``)."""
    return {**measured, "fanouts_cpu_ms_per_delivery": round(sum(
        ms for name, ms in measured["cpu_ms_per_delivery"].items()
        if name.startswith("fanout")), 3)}


def workers(stack: Stack) -> dict[str, Any]:
    """The workers part, on ``stack`` with one worker running: see the module's doc."""
    result: dict[str, Any] = {}
    for count in WORKERS:
        while len(stack.running_fanouts()) < count:
            stack.add_fanout()
        part: dict[str, Any] = {"group_stable_after_s": wait_group(stack, count)}
        for rate in RATES:
            part[f"sustained_{rate}_per_s"] = with_fanouts_summed(stack.scenario(rate, SECONDS))
        part["burst"] = {"events": BURST_EVENTS, **with_fanouts_summed(
            stack.measure(stack.load(BURST_EVENTS, 1.0, burst=True)))}
        part["idle"] = idle(stack, IDLE_SECONDS)
        result[f"{count}_workers"] = part
        print(f"{count} workers: {_brief(part)}", flush=True)
    return result


def rebalance(stack: Stack) -> dict[str, Any]:
    """The rebalance part, on ``stack`` (left with one worker): see the module's doc."""
    for name in stack.running_fanouts()[1:]:
        stack.services[name].stop()
    settled = wait_group(stack, 1)
    stack.receiver.reset()
    load = stack.load(REBALANCE_RATE, 5 * SEGMENT_SECONDS)
    actions: dict[str, dict[str, Any]] = {}
    ticks = machine_ticks()
    with ThreadPoolExecutor(1) as pool:
        publishing = pool.submit(load.run)
        started = time.time()
        marks = [("steady", started)]
        for step, action in enumerate(("join", "leave", "join_again", "kill"), start=1):
            time.sleep(max(0.0, started + step * SEGMENT_SECONDS - time.time()))
            marks.append((action, time.time()))
            actions[action] = _act(stack, action)
        published = publishing.result()
    busy = busy_cores(ticks, machine_ticks())
    expected = published["accepted"] * ENDPOINTS
    stats = stack.wait_delivered(expected)
    arrivals = [Arrival(*row) for row in stack.receiver.arrivals()]
    partitions = stack.settings.topic_partitions
    gaps = stretches(arrivals, marks,
                     lane=lambda path: partition_of(path.split("/")[2], partitions))
    per_stretch = {name: {"at_s": round(at - started, 1), **actions.get(name, {}), **gaps[name]}
                   for name, at in marks}
    missing = max(0, expected - stats["distinct"])
    return {"events_per_s": REBALANCE_RATE, "segment_seconds": SEGMENT_SECONDS,
            "group_stable_before_s": settled, "accepted": published["accepted"],
            "publish_errors": published["errors"], "expected": expected,
            "received": stats["count"], "missing": missing,
            "duplicates": stats["count"] - stats["distinct"], "stretches": per_stretch,
            "machine_busy_cores": round(busy, 2), "load_average": round(os.getloadavg()[0], 1),
            "failed": missing > 0}


def _act(stack: Stack, action: str) -> dict[str, Any]:
    """Do one action of the rebalance part; when it was done and when the group was
    stable again (seconds from its start)."""
    started = time.monotonic()
    running = stack.running_fanouts()
    if action.startswith("join"):
        name = stack.add_fanout()
        members = len(running) + 1
        figures: dict[str, Any] = {"worker": name,
                                   "healthy_after_s": round(time.monotonic() - started, 2)}
    elif action == "leave":
        name, members = running[0], len(running) - 1
        stack.services[name].stop()  # SIGTERM: the worker drains, commits and leaves
        figures = {"worker": name, "exited_after_s": round(time.monotonic() - started, 2)}
    else:
        name, members = running[0], len(running) - 1
        stack.services[name].kill()
        figures = {"worker": name}
    stable = wait_group(stack, members)
    figures["group_stable_after_s"] = (None if stable is None
                                       else round(time.monotonic() - started, 2))
    return figures


def light(stack: Stack) -> dict[str, Any]:
    """The partitions part for one stack: ``LIGHT_RATE`` events/s, then idle."""
    part = {"light": with_fanouts_summed(stack.scenario(LIGHT_RATE, SECONDS)),
            "idle": idle(stack, IDLE_SECONDS)}
    print(f"{stack.settings.topic_partitions} partitions: {_brief(part)}", flush=True)
    return part


def _brief(part: dict[str, Any]) -> str:
    """One line of a part's figures, for the log while it runs."""
    lines = []
    for name, figures in part.items():
        if isinstance(figures, dict) and "deliveries_per_s" in figures:
            latency = figures["latency"]
            lines.append(f"{name} {figures['deliveries_per_s']}/s p50 {latency.get('p50_ms')} "
                         f"p99 {latency.get('p99_ms')} ms, stack "
                         f"{figures['cpu_ms_per_delivery']['stack']} ms/delivery")
        elif isinstance(figures, dict) and "cores" in figures:
            lines.append(f"{name} {figures['cores']['stack']} cores")
    return "; ".join(lines)


def run(context: BenchContext) -> dict[str, Any]:
    """The ``hey`` ceiling, then the parts of ``PARTS``."""
    receiver = ReceiverProcess()
    tenants = spread_tenants(TENANTS)
    result: dict[str, Any] = {"setup": (
        "ingest, fanout worker(s) and eventlog (sink + API, embedded ClickHouse) as `webhooks "
        f"serve <name>` processes with default settings; {TENANTS} tenants taking turns, "
        f"spread evenly over the partitions, {ENDPOINTS} endpoints each on `*` (every event "
        "to 10 endpoints); receiver and load generator (single POST /v1/events, paced) in "
        f"their own processes; {SECONDS:g} s per rate; one local broker"
        + ("" if context.broker_pid else " (external: its CPU is not measured)")),
        "parts": list(PARTS), "cpus": os.cpu_count()}
    try:
        result["ceiling_hey_receiver"] = hey_ceiling(receiver, context.work_dir)
        if "workers" in PARTS or "rebalance" in PARTS:
            with Stack(context, receiver, tenants) as stack:
                stack.create_endpoints()
                warm_up(stack)
                if "workers" in PARTS:
                    result["workers"] = workers(stack)
                if "rebalance" in PARTS:
                    result["rebalance"] = rebalance(stack)
                    result["failed"] = result["rebalance"]["failed"]
        if "partitions" in PARTS:
            result["partitions"] = []
            for count in PARTITION_COUNTS:
                with Stack(context, receiver, tenants, topic_partitions=count) as stack:
                    stack.create_endpoints()
                    warm_up(stack)
                    result["partitions"].append({"partitions": count, **light(stack)})
    finally:
        receiver.stop()
    return result
