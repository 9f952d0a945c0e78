"""Every replica of every service restarted one at a time with SIGTERM, as a Kubernetes
rollout does it, while events flow; ends with the ledger check.

Two ingest replicas behind a readiness-gated round-robin proxy (the Service: only
replicas whose ``/healthz`` answers 200 get requests), two fanout workers and the
eventlog. Ingest and fanout roll like a Deployment with ``maxUnavailable: 0``: a new
replica starts, and once it is ready the old one gets SIGTERM and up to the chart's 60 s
``terminationGracePeriodSeconds`` to exit. The eventlog (embedded ClickHouse, one
process) is recreated: stopped, then started.

What must hold beside the ledger: no request answered 5xx by an ingest replica that
was shutting down (it leaves the proxy by answering 503 on ``/healthz`` at once, serves
what still comes meanwhile, then finishes what is in flight), no request refused by one
(connection refused or reset), and every request a receiver got has its attempt record:
a fanout worker's SIGTERM finishes its deliveries in flight and records them, or hands
them back uncommitted without sending them, never one sent and not recorded.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator

import pytest

from tests.faults.producers import IntakeWriter, RetryingProducers, stop_load
from tests.faults.proxy import ReadinessProxy
from tests.faults.stack import FaultStack, Phases, add_endpoint, probe_until_live, wait_until
from tests.support.ledger import Ledger, Pair, TopicFollower
from tests.support.receiver import Receiver
from webhooks.delivery import AttemptRecord
from webhooks.topics import Topics

TENANTS = ("acme", "globex")


def answer_slowly(_: int) -> tuple[int, dict[str, str], float]:
    return 200, {}, 0.2


@pytest.fixture
def proxy(stack: FaultStack) -> Iterator[ReadinessProxy]:
    """The Service in front of every ingest replica; a second replica meanwhile."""
    stack.ensure("ingest", "ingest-2")
    own = ReadinessProxy(lambda: [process.url for name, process in stack.processes.items()
                                  if name.startswith("ingest")]).start()
    yield own
    own.stop()
    stack.stop("ingest-2")  # the package's other tests expect one ingest


def test_every_replica_restarted_one_at_a_time_while_events_flow(
        stack: FaultStack, proxy: ReadinessProxy, receiver: Receiver,
        request: pytest.FixtureRequest) -> None:
    stack.ensure("eventlog", "fanout", "fanout-2")
    stack.wait_fanout_settled()
    proxy.wait_ready(2)
    ledger = Ledger(stack.settings, receiver, test=request.node.name, event_prefix="rollout")
    paths = []
    for tenant in TENANTS:
        for n in range(3):
            failing = tenant == "acme" and n == 0
            path = f"/rollout/{tenant}/{n}"
            # Healthy receivers take 0.2 s: a SIGTERM always finds attempts under way.
            add_endpoint(stack, ledger, receiver, path, tenant=tenant, failing=failing,
                         behaviour=None if failing else answer_slowly)
            if not failing:
                paths.append(path)
    probe_until_live(stack, ledger, receiver)

    producers = [RetryingProducers(ledger, lambda: proxy.url, threads=2, per_thread=None,
                                   api_key=f"key-{tenant}", pause=0.1).start()
                 for tenant in TENANTS]
    intake = IntakeWriter(ledger, rate=5.0, tenants=TENANTS).start()
    phases = Phases()
    phases.begin("steady")
    wait_until(lambda: sum(p.accepted for p in producers) >= 20, "20 events accepted")

    terminated: dict[str, float] = {}
    """URL of each replaced replica -> when it got its SIGTERM."""

    def replace(name: str) -> None:
        phases.begin(f"{name} replaced")
        if name == "eventlog":
            url, at = stack.recreate(name)
        else:
            url, at = stack.roll(name)
        terminated[url] = at
        phases.note(f"{name} at {url} exited ({stack.exit_codes[f'{name} ({url})']})")
        if name.startswith("fanout"):
            stack.wait_fanout_settled(timeout=90)

    for name in ("ingest", "ingest-2", "fanout", "fanout-2", "eventlog"):
        ledger.fault(lambda name=name: replace(name))
        if name.startswith("ingest"):
            proxy.wait_ready(2)
    phases.begin("after")
    time.sleep(1.0)
    intake_events = stop_load(producers, intake)
    pauses = phases.longest_pauses(receiver, paths)
    duplicates = phases.duplicates(receiver, paths)

    answers = Counter(f.status for f in proxy.forwarded)
    while_draining = [f for f in proxy.forwarded
                      if f.backend in terminated and f.started >= terminated[f.backend]]
    refused_by_replicas = [f for f in proxy.forwarded if f.status == 0]
    server_errors = [f for f in proxy.forwarded if f.status >= 500]
    report = ledger.check(stack.url("eventlog"), timeout=120, fault=(
        f"rolling restart with SIGTERM, one replica at a time (2 ingest behind a "
        f"readiness-gated proxy, 2 fanout, the eventlog), "
        f"{sum(p.accepted for p in producers)} events over HTTP and {intake_events} "
        f"through the Kafka intake: replicas answered {dict(sorted(answers.items()))} "
        f"(0: no answer), {len(while_draining)} requests reached a replica after its "
        f"SIGTERM, {sum(1 for f in while_draining if f.status >= 500 or f.status == 0)} of "
        f"them 5xx or unanswered; exit codes {sorted(set(stack.exit_codes.values()))}; "
        "per phase, longest pause in deliveries and duplicate deliveries: "
        + ", ".join(f"{name} {seconds:g} s, {duplicates[name]}"
                    for name, seconds in pauses.items())))

    problems = []
    if dropped := [f for f in while_draining if f.status >= 500 or f.status == 0]:
        problems.append(f"ingest replicas shutting down answered 5xx or dropped {len(dropped)} "
                        f"requests: {dropped[:3]}")
    if refused_by_replicas:
        problems.append(f"{len(refused_by_replicas)} requests got no answer from a replica: "
                        f"{refused_by_replicas[:3]}")
    if server_errors:
        problems.append(f"{len(server_errors)} requests answered 5xx: {server_errors[:3]}")
    if set(stack.exit_codes.values()) != {0}:
        problems.append(f"exit codes after SIGTERM: {stack.exit_codes}")
    if unrecorded := requests_without_attempt_record(ledger, receiver):
        problems.append(f"{len(unrecorded)} (event, endpoint) pairs got more requests than "
                        f"attempt records, e.g. {list(unrecorded.items())[:3]}")
    assert not problems, "\n".join(problems)
    assert report.events == len(ledger.published)


def requests_without_attempt_record(ledger: Ledger, receiver: Receiver) -> dict[Pair, int]:
    """(event, endpoint) -> requests a receiver got beyond the pair's attempt records: a
    worker stopping with SIGTERM must never send a webhook it does not record."""
    attempts = TopicFollower(ledger.settings, Topics.from_settings(ledger.settings).attempts)
    try:
        recorded = Counter((a.event_id, a.endpoint_id) for a in (
            AttemptRecord.from_json(value) for _, _, value, _ in attempts.read()))
    finally:
        attempts.close()
    sent = Counter((r.event_id, endpoint.id) for endpoint in ledger.endpoints
                   for r in receiver.at(endpoint.path))
    return {pair: n - recorded[pair] for pair, n in sent.items() if n > recorded[pair]}
