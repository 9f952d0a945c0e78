"""The soak: the whole stack under a steady mixed load for ``SOAK_MINUTES`` (default 30),
sampled every minute; ``make soak`` (``python -m benchmarks soak``), never part of
``make bench`` or ``make test``. ``SOAK_MINUTES=3`` is a quick check of the module.

Setup: as the whole-stack benchmark (:mod:`benchmarks.bench_stack`), each service its own
``webhooks serve <name>`` process on the benchmark broker, the receiver in its own
process (:mod:`benchmarks.receiver`); retry tiers ``RETRY_SCHEDULE`` so that retries and
dead letters happen within the run; ``ENDPOINTS`` endpoints on ``*``, created through the
eventlog's API, ``FAILING`` of them (10 %) answering 500 to everything (each of their
tasks goes through every tier into the DLQ).

Load, all at once for the whole run:

- ``SOAK_RATE`` (default 20) events/s over HTTP (:mod:`benchmarks.stack_load`);
- readers of the eventlog API: a follower paging ``GET /v1/events`` with its cursor as
  new events come, a scanner paging it from the start (``SCAN_PAGES`` pages of 100, then
  again), one paging ``GET /v1/dlq``, and a stream reader of ``/v1/events/stream``.

Each minute (and at the start) a sample: every service's resident memory (RSS, its
process tree) and open file descriptors, the lag of every consumer group of the
deployment (records not committed, per group and topic, from the eventlog's
``webhooks_consumer_group_lag``), the retry tiers' backlog (the fanout group's lag on each
tier topic, and the retry tasks its worker holds), the DLQ depth, the deliveries so far,
what the readers did, and how busy the machine was (it is shared).

The run fails (``failed`` in its result, and ``python -m benchmarks`` exits 1) if a
service's RSS at the end of the load is more than ``RSS_GROWTH_LIMIT`` (10 %) above its
RSS after the warm-up (the first 5 minutes; a third of a shorter run), each end the median
of three samples, or if the lag of
every group does not return to 0 within ``LAG_TIMEOUT`` of the load's end.
"""

from __future__ import annotations

import json
import os
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks.bench_fanout import ReceiverProcess
from benchmarks.bench_stack import AUTH, LoadGenerator
from benchmarks.context import BenchContext, busy_cores, machine_ticks
from services.eventlog.sink import SINK_GROUP
from services.localdev.kafka_broker import free_port
from services.localdev.service_process import ServiceProcess
from webhooks.retry_schedule import RetrySchedule
from webhooks.settings import Settings

MINUTES = float(os.environ.get("SOAK_MINUTES", "30"))
RATE = float(os.environ.get("SOAK_RATE", "20"))
"""Events per second over HTTP; each goes to every endpoint."""
ENDPOINTS = 10
FAILING = 1
RETRY_SCHEDULE = "5s,10s,20s"
WARMUP_MINUTES = min(5.0, MINUTES / 3)
RSS_GROWTH_LIMIT = 0.10
ENDS = 3  # samples whose median is each end of the RSS comparison
LAG_TIMEOUT = sum(tier.delay for tier in RetrySchedule.parse(RETRY_SCHEDULE).tiers) + 120.0
"""Seconds after the load for every group's lag to reach 0: the last failing task's
tiers, then its dead letter stored, with room for a slow machine."""
SCAN_PAGES = 10
SAMPLE_SECONDS = 60.0
METRICS_TIMEOUT = 45.0
SERVICES = ("ingest", "fanout", "eventlog")


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (uvicorn's workers)."""
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            pids += process_tree(int(child))
    return pids


def rss_mb(pid: int) -> tuple[float, float]:
    """Resident memory of ``pid`` and its descendants, in MiB: all of it (``VmRSS``) and
    the part mapped from files (``RssFile``: shared libraries' pages, which the kernel can
    drop and read again)."""
    total_kb = file_kb = 0
    for member in process_tree(pid):
        for line in Path(f"/proc/{member}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total_kb += int(line.split()[1])
            elif line.startswith("RssFile:"):
                file_kb += int(line.split()[1])
    return round(total_kb / 1024, 1), round(file_kb / 1024, 1)


def open_fds(pid: int) -> int:
    return sum(len(os.listdir(f"/proc/{member}/fd")) for member in process_tree(pid))


class Readers:
    """The eventlog API's readers, each a thread until :meth:`stop`; counts what they did."""

    def __init__(self, eventlog_url: str) -> None:
        self.url = eventlog_url
        self.counts: dict[str, int] = {"pages": 0, "events_paged": 0, "dlq_pages": 0,
                                       "streamed": 0, "stream_connects": 0, "errors": 0}
        self.slowest_page_s = 0.0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._threads = [threading.Thread(target=target, daemon=True) for target in (
            self._follow, self._scan, self._dead_letters, self._stream)]

    def start(self) -> Readers:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        for thread in self._threads:
            thread.join(30)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {**self.counts, "slowest_page_s": round(self.slowest_page_s, 3)}

    def _count(self, **increments: int) -> None:
        with self._lock:
            for name, value in increments.items():
                self.counts[name] += value

    def _page(self, client: httpx.Client, path: str, cursor: str | None) -> dict[str, Any]:
        started = time.monotonic()
        answer = client.get(path, params={"limit": 100, **({"cursor": cursor} if cursor else {})})
        answer.raise_for_status()
        with self._lock:
            self.slowest_page_s = max(self.slowest_page_s, time.monotonic() - started)
        return answer.json()

    def _loop(self, step: Any) -> None:
        """Run ``step(client)`` until stopped; an error is counted and waited out."""
        with httpx.Client(base_url=self.url, headers=AUTH, timeout=30.0) as client:
            while not self._stopping.is_set():
                try:
                    step(client)
                except httpx.HTTPError:
                    self._count(errors=1)
                    self._stopping.wait(1.0)

    def _follow(self) -> None:
        """Keeps its cursor: pages to the end, waits a second, goes on from there."""
        cursor: list[str | None] = [None]

        def step(client: httpx.Client) -> None:
            page = self._page(client, "/v1/events", cursor[0])
            self._count(pages=1, events_paged=len(page["data"]))
            cursor[0] = page["next_cursor"] or cursor[0]
            if not page["has_more"]:
                self._stopping.wait(1.0)

        self._loop(step)

    def _scan(self) -> None:
        """From the start of the log, ``SCAN_PAGES`` pages, then again."""
        def step(client: httpx.Client) -> None:
            cursor = None
            for _ in range(SCAN_PAGES):
                page = self._page(client, "/v1/events", cursor)
                self._count(pages=1, events_paged=len(page["data"]))
                if not page["has_more"]:
                    break
                cursor = page["next_cursor"]
            self._stopping.wait(1.0)

        self._loop(step)

    def _dead_letters(self) -> None:
        def step(client: httpx.Client) -> None:
            cursor = None
            while not self._stopping.is_set():
                page = self._page(client, "/v1/dlq", cursor)
                self._count(dlq_pages=1)
                if not page["has_more"]:
                    break
                cursor = page["next_cursor"]
            self._stopping.wait(5.0)

        self._loop(step)

    def _stream(self) -> None:
        """``/v1/events/stream``, resumed with Last-Event-ID whenever it ends."""
        last_id: list[str | None] = [None]

        def step(client: httpx.Client) -> None:
            headers = {"Last-Event-ID": last_id[0]} if last_id[0] else {}
            with client.stream("GET", "/v1/events/stream", headers=headers,
                               params={"heartbeat": 5}, timeout=httpx.Timeout(
                                   30.0, read=60.0)) as answer:
                answer.raise_for_status()
                self._count(stream_connects=1)
                for line in answer.iter_lines():
                    if line.startswith("data:"):
                        self._count(streamed=1)
                    elif line.startswith("id:"):
                        last_id[0] = line[3:].strip()
                    if self._stopping.is_set():
                        return

        self._loop(step)


class SoakStack:
    """The services, the receiver and the endpoints, and their meters."""

    def __init__(self, context: BenchContext) -> None:
        settings = context.settings(
            ingest_port=free_port(), eventlog_port=free_port(), fanout_port=free_port(),
            log_level="warning", retry_schedule=RETRY_SCHEDULE)
        # The embedded ClickHouse opens a folder from one process only: its own.
        self.settings: Settings = settings.model_copy(update={
            "clickhouse_url": settings.clickhouse_url.replace("/clickhouse?",
                                                              "/clickhouse-soak?")})
        self.context = context
        self.receiver = ReceiverProcess()
        self.services = {name: ServiceProcess(name, self.settings,
                                              context.work_dir / f"soak-{name}.log")
                         for name in SERVICES}

    def start(self) -> None:
        for service in self.services.values():
            service.launch()
        for service in self.services.values():
            service.wait_healthy(180)

    def stop(self) -> None:
        for service in self.services.values():
            service.stop()
        self.receiver.stop()

    def create_endpoints(self) -> None:
        """``ENDPOINTS`` endpoints on ``*`` through the API (the first ``FAILING`` answer
        500), then a probe event until every healthy one got it."""
        eventlog = self.services["eventlog"].url
        for n in range(ENDPOINTS):
            path = f"/fail/soak/{n}" if n < FAILING else f"/soak/{n}"
            httpx.post(f"{eventlog}/v1/endpoints", headers=AUTH, timeout=30,
                       json={"url": self.receiver.url(path), "events": ["*"]}
                       ).raise_for_status()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            self.receiver.reset()
            httpx.post(f"{self.services['ingest'].url}/v1/events", headers=AUTH, timeout=30,
                       json={"type": "bench.probe", "data": {"object": {"n": -1}}}
                       ).raise_for_status()
            for _ in range(50):
                if self.counts()["probes"] >= ENDPOINTS - FAILING:
                    self.receiver.reset()
                    return
                time.sleep(0.1)
        raise TimeoutError("a probe event never reached every endpoint")

    def counts(self) -> dict[str, Any]:
        return json.loads(httpx.get(self.receiver.url("/counts"), timeout=30).content)

    def group_lags(self) -> dict[str, dict[str, int]]:
        """group -> topic -> records not committed (the eventlog's gauge)."""
        lags: dict[str, dict[str, int]] = {}
        # The eventlog asks Kafka and ClickHouse for these; on a saturated machine that
        # took over 5 s once, which must not end a 30-minute run.
        metrics = self.services["eventlog"].metrics(timeout=METRICS_TIMEOUT)
        for line in metrics.splitlines():
            if line.startswith("webhooks_consumer_group_lag{"):
                labels, value = line.rsplit(" ", 1)
                fields = dict(part.split("=", 1) for part in labels[
                    len("webhooks_consumer_group_lag{"):-1].split(","))
                group, topic = fields["group"].strip('"'), fields["topic"].strip('"')
                short = topic.removeprefix(f"{self.settings.topic_prefix}.")
                name = group.removeprefix(self.settings.topic_prefix).lstrip(".-")
                lags.setdefault(name, {})[short] = int(float(value))
            elif line.startswith("webhooks_dlq_depth "):
                lags.setdefault("dlq_depth", {})["dlq"] = int(float(line.split()[1]))
        return lags

    def sample(self, started: float, readers: Readers,
               machine_before: tuple[int, int]) -> dict[str, Any]:
        pids = {name: service.process.pid for name, service in self.services.items()
                if service.process is not None}
        resident = {name: rss_mb(pid) for name, pid in pids.items()}
        lags = self.group_lags()
        dlq_depth = lags.pop("dlq_depth", {}).get("dlq", 0)
        fanout = lags.get("fanout", {})
        waiting = self.services["fanout"].metric_by_label("webhooks_unacked_messages", "topic")
        busy = busy_cores(machine_before, machine_ticks())
        counts = self.counts()
        return {
            "minute": round((time.monotonic() - started) / 60, 2),
            "rss_mb": {name: total for name, (total, _) in resident.items()},
            "rss_file_mb": {name: file for name, (_, file) in resident.items()},
            "ingest_index_mb": round(sum(self.services["ingest"].metric_by_label(
                "webhooks_ingest_index_memory_bytes", "part").values()) / 2**20, 1),
            "eventlog_engine_mb": round(self.services["eventlog"].metric_by_label(
                "webhooks_clickhouse_memory_bytes", "kind").get("tracked", 0.0) / 2**20, 1),
            "open_fds": {name: open_fds(pid) for name, pid in pids.items()},
            "lag": {group: sum(topics.values()) for group, topics in lags.items()},
            "retry_backlog": {topic: lag for topic, lag in fanout.items()
                              if topic.startswith("retry.")},
            "retry_tasks_held": {topic.removeprefix(f"{self.settings.topic_prefix}."): int(n)
                                 for topic, n in waiting.items() if ".retry." in topic},
            "dlq_depth": dlq_depth,
            "delivered": counts["count"], "failed_attempts": counts["failed"],
            "readers": readers.snapshot(),
            "machine_busy_cores": round(busy, 2),
            "load_average": round(os.getloadavg()[0], 1),
        }


def run(context: BenchContext) -> dict[str, Any]:
    stack = SoakStack(context)
    result: dict[str, Any] = {"setup": (
        f"ingest, fanout and eventlog (sink + API, embedded ClickHouse) as `webhooks serve` "
        f"processes on one local broker, retry tiers {RETRY_SCHEDULE}; {ENDPOINTS} endpoints "
        f"on `*` ({FAILING} answering 500: every task of it through the tiers into the DLQ); "
        f"{RATE:g} events/s over HTTP for {MINUTES:g} min, with a follower and a scanner "
        "paging GET /v1/events, a reader paging GET /v1/dlq and one following "
        "/v1/events/stream; a sample each minute"),
        "minutes": MINUTES, "events_per_s": RATE, "warmup_minutes": round(WARMUP_MINUTES, 2)}
    samples: list[dict[str, Any]] = []
    result["samples"] = samples
    try:
        stack.start()
        stack.create_endpoints()
        load = LoadGenerator(stack.services["ingest"].url, RATE, MINUTES * 60, 0,
                             context.work_dir / "soak-load.log")
        readers = Readers(stack.services["eventlog"].url).start()
        published: dict[str, Any] = {}
        loading = threading.Thread(target=lambda: published.update(load.run()), daemon=True)
        started, machine = time.monotonic(), machine_ticks()
        loading.start()
        next_sample = started
        while loading.is_alive():
            if time.monotonic() >= next_sample:
                samples.append(stack.sample(started, readers, machine))
                machine = machine_ticks()
                print(json.dumps(samples[-1]), flush=True)
                next_sample += SAMPLE_SECONDS
            loading.join(min(1.0, max(0.0, next_sample - time.monotonic())))
        samples.append(stack.sample(started, readers, machine))  # the end of the load
        load_ended = time.monotonic()
        readers.stop()
        result["published"] = {key: published.get(key) for key in (
            "events", "accepted", "status", "errors", "accepted_per_s", "post_latency")}
        result["readers"] = readers.snapshot()
        result["lag_zero_after_s"] = lag_zero_after(stack, load_ended)
        result["after_load"] = stack.sample(started, readers, machine)
        result.update(verdict(samples, result["lag_zero_after_s"]))
        result["table"] = table(samples)
        print("\n".join(result["table"]), flush=True)
    finally:
        stack.stop()
    return result


def lag_zero_after(stack: SoakStack, load_ended: float) -> float | None:
    """Seconds from the load's end until every group's lag is 0; None if not within
    ``LAG_TIMEOUT``."""
    while time.monotonic() - load_ended < LAG_TIMEOUT:
        lags = stack.group_lags()
        lags.pop("dlq_depth", None)
        if all(lag == 0 for topics in lags.values() for lag in topics.values()):
            return round(time.monotonic() - load_ended, 1)
        time.sleep(2.0)
    return None


def verdict(samples: list[dict[str, Any]], lag_zero: float | None) -> dict[str, Any]:
    """RSS growth of each service from just after the warm-up to the end of the load;
    ``failed`` lists what did not hold.

    Each end is the median of ``ENDS`` consecutive samples: the embedded ClickHouse's RSS
    swings 20-60 MiB from one minute to the next as it merges parts, so one sample
    against another judges that swing, not a trend.

    Ingest's idempotency index has two fixed RocksDB budgets (memtables and block cache,
    32 MiB each) that fill with the first hours of traffic: at the soak's rate they are
    still filling when it ends. Its growth is judged net of what they hold, which the
    service exports; the raw growth is reported beside it."""
    first = next((i for i, s in enumerate(samples) if s["minute"] >= WARMUP_MINUTES),
                 len(samples) - 1)
    start, end = samples[first:first + ENDS], samples[-ENDS:]

    def mib(window: list[dict[str, Any]], name: str, net: bool) -> float:
        return statistics.median(
            s["rss_mb"][name] - (s.get("ingest_index_mb", 0.0) if net else 0.0)
            for s in window)

    def growth(name: str, net: bool) -> float:
        before = mib(start, name, net)
        return round((mib(end, name, net) - before) / before * 100, 1)

    judged = {name: growth(name, name == "ingest") for name in SERVICES}
    failed = [f"{name}: RSS grew {pct:g} % after the warm-up (median of {ENDS} samples "
              f"from {mib(start, name, name == 'ingest'):.1f} to "
              f"{mib(end, name, name == 'ingest'):.1f} MiB"
              f"{' net of the index budgets' if name == 'ingest' else ''})"
              for name, pct in judged.items() if pct > RSS_GROWTH_LIMIT * 100]
    if lag_zero is None:
        failed.append(f"consumer lag not back to 0 within {LAG_TIMEOUT:g} s of the load's end")
    return {"rss_baseline_minute": samples[first]["minute"], "rss_growth_pct": judged,
            "rss_growth_raw_pct": {name: growth(name, False) for name in SERVICES},
            **({"failed": failed} if failed else {})}


def table(samples: list[dict[str, Any]]) -> list[str]:
    """A Markdown table, one row per sample."""
    rows = ["| minute | RSS MiB ingest / fanout / eventlog | of it file-backed | "
            "ingest index budgets MiB | ClickHouse tracked MiB | fds | lag fanout / sink | "
            "retry backlog | DLQ | delivered | busy cores |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in samples:
        lag = s["lag"]
        fanout, sink = lag.get("fanout", 0), lag.get(SINK_GROUP, 0)
        rows.append(
            f"| {s['minute']:.0f} | {' / '.join(str(s['rss_mb'][n]) for n in SERVICES)} | "
            f"{' / '.join(str(s.get('rss_file_mb', {}).get(n, '')) for n in SERVICES)} | "
            f"{s.get('ingest_index_mb', '')} | {s.get('eventlog_engine_mb', '')} | "
            f"{' / '.join(str(s['open_fds'][n]) for n in SERVICES)} | {fanout} / {sink} | "
            f"{sum(s['retry_backlog'].values())} | {s['dlq_depth']} | {s['delivered']} | "
            f"{s['machine_busy_cores']} |")
    return rows

