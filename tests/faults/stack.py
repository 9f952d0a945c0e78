"""The platform as deployed, for fault tests: every service a child process that a test
can ``kill -9`` and start again, plus the helpers to feed it and wait for it."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
from confluent_kafka import ConsumerGroupState, KafkaException

from services.localdev.service_process import ServiceProcess
from tests.conftest import TEST_API_KEYS, TEST_SECRETS_KEY
from tests.services.fanout.harness import Platform
from tests.support.backends import with_database
from tests.support.ledger import Ledger, TopicFollower, committed_offsets, fanout_group
from tests.support.receiver import Behaviour, Receiver
from webhooks.kafka import create_admin
from webhooks.settings import Settings
from webhooks.topics import Topics, ensure_topics

LOG_NOISE = ("Unable connect to node", "Unable to update metadata", "Failed fetch messages",
             "rdkafka#")
"""Lines of a worker's log left out of a failure message: the client libraries' reports
of a broker they cannot reach, thousands in an outage."""


def fault_settings(kafka_bootstrap: str, clickhouse_url: str, **overrides: object) -> Settings:
    """Short retries and timeouts, smallish sink batches (so that a kill lands among the
    inserts of a backlog), a short shutdown delay, and every topic created."""
    scope = f"f{uuid.uuid4().hex[:10]}"
    settings = Settings(**{
        "kafka_bootstrap": kafka_bootstrap,
        "clickhouse_url": with_database(clickhouse_url, scope),
        "topic_prefix": scope,
        "topic_partitions": 3,
        "retry_schedule": "1s,2s",
        "retry_jitter": 0.0,
        "api_keys": TEST_API_KEYS,
        "secrets_key": TEST_SECRETS_KEY,
        "allow_private_targets": ("127.0.0.0/8",),
        "delivery_timeout": 2.0,
        "sink_batch_size": 200,
        "sink_batch_wait": 0.2,
        "cursor_secret": "fault-suite-cursor-secret",
        # On SIGTERM, ingest and the eventlog serve 1 s more with /healthz at 503: the
        # rolling restart's proxy probes every 0.2 s.
        "shutdown_delay": 1.0,
        **overrides,
    })
    ensure_topics(settings)
    return settings


def own_clickhouse(clickhouse_base_url: str, folder: Path) -> str:
    """The embedded engine belongs to one process: the eventlog gets its own folder."""
    return f"chdb://{folder}" if clickhouse_base_url.startswith("chdb://") \
        else clickhouse_base_url


class FaultStack:
    """Named service processes (``eventlog``, ``fanout``, ``fanout-2``, ``ingest``…) of
    one configuration, each started, killed and restarted on its own."""

    def __init__(self, settings: Settings, log_dir: Path) -> None:
        self.settings = settings
        self.log_dir = log_dir
        self.processes: dict[str, ServiceProcess] = {}
        self.platform = Platform(settings)
        self.restarts = 0
        self.exit_codes: dict[str, int | None] = {}
        """How each replica replaced by :meth:`roll` or :meth:`recreate` exited."""

    def start(self, name: str) -> ServiceProcess:
        """Start ``name`` (its service is the part before any ``-``) and wait until healthy.

        A restarted service gets a new port: read :meth:`url` again after a restart.
        """
        service = name.split("-")[0]
        process = ServiceProcess(service, self.settings, self.log_dir / f"{name}.log")
        self.processes[name] = process
        return process.start(timeout=120)

    def start_together(self, *names: str, timeout: float = 180.0) -> None:
        """Start every one of ``names`` at once, then wait until all are healthy."""
        for name in names:
            service = name.split("-")[0]
            self.processes[name] = ServiceProcess(
                service, self.settings, self.log_dir / f"{name}.log").launch()
        for name in names:
            self.processes[name].wait_healthy(timeout)

    def roll(self, name: str, grace: float = 60.0) -> tuple[str, float]:
        """Replace ``name`` as a Deployment's rolling update does with ``maxUnavailable:
        0``: start a new replica (beside the old one, under ``name~new`` until then),
        wait until it is ready, SIGTERM the old one and wait for it to exit (SIGKILL
        after ``grace``, the chart's ``terminationGracePeriodSeconds``). The new one takes
        the name. Returns the old one's URL and when it got its SIGTERM."""
        old = self.processes[name]
        self.restarts += 1
        new = ServiceProcess(old.name, self.settings,
                             self.log_dir / f"{name}.{self.restarts}.log")
        self.processes[f"{name}~new"] = new
        new.start(timeout=180)
        terminated = time.monotonic()
        old.terminate()
        old.wait_exit(grace)
        self.exit_codes[f"{name} ({old.url})"] = old.process.returncode if old.process else None
        self.processes[name] = self.processes.pop(f"{name}~new")
        return old.url, terminated

    def recreate(self, name: str, grace: float = 60.0) -> tuple[str, float]:
        """Replace ``name`` as a ``Recreate`` Deployment does (the embedded ClickHouse is
        opened by one process only): SIGTERM, wait for the exit, start a new one."""
        old = self.processes[name]
        terminated = time.monotonic()
        old.terminate()
        old.wait_exit(grace)
        self.exit_codes[f"{name} ({old.url})"] = old.process.returncode if old.process else None
        self.start(name)
        return old.url, terminated

    def kill(self, name: str) -> None:
        """``kill -9`` of ``name``: no shutdown, no final flush or commit."""
        self.processes[name].kill()

    def stop(self, name: str) -> None:
        self.processes.pop(name).stop()

    def running(self, name: str) -> bool:
        process = self.processes.get(name)
        return process is not None and process.process is not None \
            and process.process.poll() is None

    def ensure(self, *names: str) -> None:
        """Start each of ``names`` that is not running (a test before killed it)."""
        for name in names:
            if not self.running(name):
                self.start(name)

    def url(self, name: str) -> str:
        return self.processes[name].url

    def wait_fanout_committed(self, timeout: float = 60.0) -> None:
        """Until the fanout committed everything on the events topic so far: on a fresh
        broker its first commits come only once the offsets topic is ready."""
        topic = Topics.from_settings(self.settings).events
        follower = TopicFollower(self.settings, topic)
        try:
            follower.read()
            ends = {p: follower.next_offsets[p] for p in follower.partitions}
        finally:
            follower.close()
        deadline = time.monotonic() + timeout
        while any(committed < ends[p] for p, committed in committed_offsets(
                self.settings, fanout_group(self.settings), topic).items() if ends[p]):
            assert time.monotonic() < deadline, "the fanout never committed its offsets"
            time.sleep(0.5)

    def wait_fanout_settled(self, timeout: float = 60.0) -> None:
        """Until the fanout's consumer group is stable with one member per running worker:
        a rebalance still to come would redo work in flight, which no fault explains."""
        workers = sum(1 for name in self.processes if name.startswith("fanout")
                      and self.running(name))
        admin = create_admin(self.settings.kafka)
        deadline = time.monotonic() + timeout
        while True:
            (future,) = admin.describe_consumer_groups([fanout_group(self.settings)]).values()
            try:
                group = future.result()
                state, members = group.state, len(group.members)
            except KafkaException as exc:  # e.g. a restarted coordinator still loading
                state, members = str(exc), 0
            if state == ConsumerGroupState.STABLE and members == workers:
                return
            assert time.monotonic() < deadline, (
                f"fanout group {state}, {members} of {workers} members; the fanout logs end:\n"
                + self.fanout_log_tails())
            time.sleep(0.5)

    def fanout_log_tails(self, lines: int = 60) -> str:
        """The last ``lines`` lines of each fanout worker's current log, without the lines
        of :data:`LOG_NOISE`."""
        tails = []
        for name, process in self.processes.items():
            if name.startswith("fanout"):
                kept = [line for line in process.log_tail(chars=10_000_000).splitlines()
                        if not any(noise in line for noise in LOG_NOISE)]
                tails.append(f"== {name}\n" + "\n".join(kept[-lines:]))
        return "\n".join(tails)

    def wait_fanout_views(self, timeout: float = 60.0) -> None:
        """Until every running fanout worker's endpoints view holds every endpoint written
        through :attr:`platform`: an event matched before would miss a new endpoint."""
        wanted = len(self.platform.endpoint_ids)
        for name in [n for n in self.processes if n.startswith("fanout") and self.running(n)]:
            wait_until(lambda name=name: httpx.get(f"{self.url(name)}/healthz", timeout=5)
                       .json()["endpoints"] >= wanted,
                       f"{name}'s endpoints view holds the {wanted} endpoints written",
                       timeout=timeout, interval=0.1)

    def stop_all(self) -> None:
        """SIGTERM to every process at once, then wait for each (SIGKILL after 20 s)."""
        for process in self.processes.values():
            process.terminate()
        for process in self.processes.values():
            process.wait_exit(20)
        self.processes.clear()


def wait_until(condition: Callable[[], object], what: str, timeout: float = 60.0,
               interval: float = 0.01) -> None:
    """Poll ``condition`` until it holds; fail, naming ``what``, after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout:g} s: {what}"
        time.sleep(interval)


def answer_500(_: int) -> tuple[int, dict[str, str], float]:
    return 500, {}, 0.0


def add_endpoint(stack: FaultStack, ledger: Ledger, receiver: Receiver, path: str,
                 tenant: str = "acme", behaviour: Behaviour | None = None,
                 failing: bool = False) -> str:
    """An endpoint of ``tenant`` for the ledger's events at ``receiver``'s ``path``,
    written to the endpoints topic as the eventlog API does; returns its id.

    A ``failing`` endpoint answers 500 to everything: its events must end in the DLQ.
    """
    if failing:
        behaviour = answer_500
    url = receiver.on(path, behaviour) if behaviour else receiver.url(path)
    events = [f"{ledger.event_prefix}.*"]
    endpoint = stack.platform.endpoint(url, events, tenant=tenant)
    ledger.endpoint(endpoint.id, tenant, path, events, failing=failing)
    return endpoint.id


def probe_until_live(stack: FaultStack, ledger: Ledger, receiver: Receiver,
                     timeout: float = 60.0) -> None:
    """Publish one event per tenant of the ledger's endpoints (part of the ledger) until
    every endpoint got a request: the fanout's view has them and its group is settled.

    The probes go out once every worker's view holds the endpoints: a probe matched
    before would rightly not be delivered to them, and the ledger would miss it."""
    stack.wait_fanout_views(timeout)
    tenants = sorted({endpoint.tenant for endpoint in ledger.endpoints})
    probes = {tenant: stack.platform.event(f"{ledger.event_prefix}.probe", tenant=tenant)
              for tenant in tenants}
    for envelope in probes.values():
        ledger.accepted(envelope)
    deadline = time.monotonic() + timeout
    for endpoint in ledger.endpoints:
        wanted = probes[endpoint.tenant].id
        while wanted not in {r.event_id for r in receiver.at(endpoint.path)}:
            assert time.monotonic() < deadline, f"{endpoint.path}: the probe never arrived"
            time.sleep(0.1)


class Phases:
    """Named stretches of a test's load, one after the other, and the longest pause in
    deliveries that began in each: the largest gap between two requests in a row at the
    healthy endpoints' paths."""

    def __init__(self) -> None:
        self.marks: list[tuple[str, float]] = []
        self.started = time.monotonic()
        self.notes: list[str] = []
        """What happened when (seconds since the start), printed with the figures."""

    def begin(self, name: str) -> None:
        self.marks.append((name, time.monotonic()))
        self.note(f"-- {name}")

    def note(self, what: str) -> None:
        self.notes.append(f"{time.monotonic() - self.started:7.1f} s  {what}")
        print(self.notes[-1], flush=True)

    def duplicates(self, receiver: Receiver, paths: list[str]) -> dict[str, int]:
        """Requests that repeated an earlier one (same event, same path), per phase of
        their arrival."""
        seen: set[tuple[str, str]] = set()
        repeats = []
        for request in sorted((r for path in paths for r in receiver.at(path)),
                              key=lambda r: r.at):
            if (request.path, request.event_id) in seen:
                repeats.append(request.at)
            seen.add((request.path, request.event_id))
        bounds = [*self.marks, ("", float("inf"))]
        return {name: sum(1 for at in repeats if start <= at < stop)
                for (name, start), (_, stop) in zip(bounds, bounds[1:], strict=False)}

    def longest_pauses(self, receiver: Receiver, paths: list[str]) -> dict[str, float]:
        """Seconds, per phase (the last one ends with the last request)."""
        times = sorted(request.at for path in paths for request in receiver.at(path))
        bounds = [*self.marks, ("", float("inf"))]
        return {name: round(max((b - a for a, b in zip(times, times[1:], strict=False)
                                 if start <= a < stop), default=0.0), 2)
                for (name, start), (_, stop) in zip(bounds, bounds[1:], strict=False)}
