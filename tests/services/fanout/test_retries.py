"""Retry tiers, DLQ, isolation, rate limits and 410 against real receivers (schedule 1s,2s,3s)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable

import pytest

from services.localdev.service_process import ServiceProcess
from tests.services.fanout.harness import Platform, partition_of
from tests.support.kafka import read_topic
from tests.support.receiver import Receiver
from webhooks.delivery import AttemptRecord, DeliveryTask
from webhooks.endpoints import Endpoint, EndpointSecret
from webhooks.envelope import Envelope
from webhooks.retry_schedule import RetrySchedule
from webhooks.settings import Settings
from webhooks.topics import ensure_topics

TOLERANCE = 3.0  # seconds a retry may come late on a busy machine
TIERS = (1.0, 2.0, 3.0)  # the test schedule, "1s,2s,3s"
EARLY = 0.1  # seconds a retry may come before its due time (timer and clock granularity)
LATE = 0.9  # seconds a retry may come after it: the worker's lag, on a loaded machine
MAX_WAITING = 3


@pytest.fixture(scope="module")
def settings(make_settings: Callable[..., Settings]) -> Settings:
    """A tiny per-tier memory bound, so that the bound is exercised."""
    module_settings = make_settings(fanout_max_waiting=MAX_WAITING)
    ensure_topics(module_settings)
    return module_settings


def failing(_: int) -> tuple[int, dict[str, str], float]:
    return 500, {}, 0.0


def dlq_tasks(settings: Settings, platform: Platform, endpoint_id: str,
              expect: int | None = None, idle: float = 3.0) -> list[DeliveryTask]:
    def ours(messages: list) -> list[DeliveryTask]:  # type: ignore[type-arg]
        tasks = [DeliveryTask.from_json(m.value()) for m in messages]
        return [t for t in tasks if t.endpoint_id == endpoint_id]

    if expect is None:
        return ours(read_topic(settings, platform.topics.dlq, idle=idle))
    return ours(read_topic(settings, platform.topics.dlq,
                           until=lambda ms: len(ours(ms)) >= expect, timeout=60))


def attempt_records(settings: Settings, platform: Platform, endpoint_id: str,
                    expect: int) -> list[AttemptRecord]:
    """The endpoint's attempt records by attempt number, once ``expect`` arrived."""
    def ours(messages: list) -> list[AttemptRecord]:  # type: ignore[type-arg]
        records = [AttemptRecord.from_json(m.value()) for m in messages]
        return [r for r in records if r.endpoint_id == endpoint_id]

    records = ours(read_topic(settings, platform.topics.attempts,
                              until=lambda ms: len(ours(ms)) >= expect))
    return sorted(records, key=lambda r: r.attempt)


def test_a_failing_receiver_sees_every_tier_then_the_task_is_dead_lettered(
        worker: ServiceProcess, platform: Platform, receiver: Receiver,
        settings: Settings) -> None:
    endpoint = platform.endpoint(receiver.on("/failing", failing), ["*"])
    time.sleep(2)
    event = platform.event("order.failed", id="o1")

    requests = receiver.wait_for("/failing", 4, timeout=60)
    assert [r.headers["webhook-attempt"] for r in requests] == ["1", "2", "3", "4"]
    assert {r.headers["webhook-id"] for r in requests} == {event.id}
    # Jitter is 0 in tests, so each gap is its tier's delay plus the worker's own lag; the
    # bounds are narrow enough that one flat wait for every tier (or a tier off by one
    # second) would fail.
    gaps = [later.at - earlier.at for earlier, later in zip(requests, requests[1:], strict=False)]
    assert settings.retry_schedule == RetrySchedule.parse("1s,2s,3s", jitter=0.0)
    for gap, tier in zip(gaps, TIERS, strict=True):
        assert tier - EARLY <= gap <= tier + LATE, gaps
    assert all(shorter < longer for shorter, longer in zip(gaps, gaps[1:], strict=False)), gaps

    [dead] = dlq_tasks(settings, platform, endpoint.id, expect=1)
    assert dead.event.id == event.id
    assert dead.dlq_reason and "exhausted" in dead.dlq_reason
    assert [h.attempt for h in dead.history] == [1, 2, 3, 4]
    assert all(h.status == "failed" and h.response_status == 500 for h in dead.history)
    time.sleep(2)
    assert len(receiver.at("/failing")) == 4  # nothing after the DLQ

    ours = attempt_records(settings, platform, endpoint.id, expect=4)
    assert [a.outcome for a in ours] == ["retrying", "retrying", "retrying", "dead_lettered"]
    assert all(a.error == "http_status" and a.response_body == '{"received":true}'
               for a in ours)
    assert all(a.next_attempt_at for a in ours[:3]) and ours[3].next_attempt_at is None

    # Each retry arrived when the previous attempt record said it would (receipts are
    # monotonic; the records are wall-clock, from the same machine's clock).
    to_wall = time.time() - time.monotonic()
    for record, retry in zip(ours[:3], requests[1:], strict=True):
        due = record.next_attempt_at.timestamp()  # type: ignore[union-attr]
        assert due - EARLY <= retry.at + to_wall <= due + LATE, (record, retry.at + to_wall)


def test_a_receiver_recovering_mid_schedule_gets_the_event_and_nothing_is_dead_lettered(
        worker: ServiceProcess, platform: Platform, receiver: Receiver,
        settings: Settings) -> None:
    def recovers(n: int) -> tuple[int, dict[str, str], float]:
        return (503, {}, 0.0) if n <= 2 else (200, {}, 0.0)

    endpoint = platform.endpoint(receiver.on("/recovering", recovers), ["*"])
    time.sleep(2)
    event = platform.event("order.flaky", id="o2")
    requests = receiver.wait_for("/recovering", 3, timeout=60)
    assert [r.headers["webhook-attempt"] for r in requests] == ["1", "2", "3"]
    assert {r.event_id for r in requests} == {event.id}
    time.sleep(4)  # longer than the last tier: a wrongful further attempt would show
    assert len(receiver.at("/recovering")) == 3
    assert dlq_tasks(settings, platform, endpoint.id) == []


def test_an_unusable_secret_fails_each_attempt_then_dead_letters_and_the_worker_moves_on(
        worker: ServiceProcess, platform: Platform, receiver: Receiver,
        settings: Settings) -> None:
    # Passes the endpoint schema's pattern, but is 3 bytes where 24-64 are required.
    broken = platform.endpoint(receiver.url("/misconfigured"), ["*"], tenant="badsecret",
                               secrets=[EndpointSecret(secret="whsec_AAAA")])
    platform.endpoint(receiver.url("/fine"), ["*"], tenant="badsecret")
    time.sleep(2)
    first = platform.event("order.created", tenant="badsecret", id="m1")

    [dead] = dlq_tasks(settings, platform, broken.id, expect=1)
    assert dead.event.id == first.id and [h.attempt for h in dead.history] == [1, 2, 3, 4]
    assert all(h.error == "endpoint_misconfigured" for h in dead.history)
    ours = attempt_records(settings, platform, broken.id, expect=4)
    assert [a.outcome for a in ours] == ["retrying", "retrying", "retrying", "dead_lettered"]
    assert all("cannot sign" in (a.response_body or "") for a in ours)
    # Nothing unsigned went out, and the other endpoint got its event and keeps getting them.
    later = platform.event("order.created", tenant="badsecret", id="m2")
    assert [r.event_id for r in receiver.wait_for("/fine", 2)] == [first.id, later.id]
    assert receiver.at("/misconfigured") == []


def test_retry_after_lengthens_the_wait_up_to_the_next_tier(
        worker: ServiceProcess, platform: Platform, receiver: Receiver) -> None:
    def busy_once(n: int) -> tuple[int, dict[str, str], float]:
        return (429, {"Retry-After": "60"}, 0.0) if n == 1 else (200, {}, 0.0)

    platform.endpoint(receiver.on("/busy", busy_once), ["*"])
    time.sleep(2)
    platform.event("order.busy", id="o3")
    first, second = receiver.wait_for("/busy", 2, timeout=30)
    # Tier 1 waits 1s; Retry-After 60 is clamped to the next tier's delay (2s).
    assert 1.8 <= second.at - first.at <= 2.0 + TOLERANCE


def test_a_hanging_receiver_does_not_delay_a_healthy_one_on_the_same_partition(
        worker: ServiceProcess, platform: Platform, receiver: Receiver,
        settings: Settings) -> None:
    def hangs(_: int) -> tuple[int, dict[str, str], float]:
        return 200, {}, 30.0

    hanging = platform.endpoint(receiver.on("/hanging", hangs), ["*"], tenant="slowco")
    healthy = platform.endpoint(receiver.url("/healthy"), ["*"], tenant="slowco")
    while partition_of(healthy.id, settings.topic_partitions) != partition_of(
            hanging.id, settings.topic_partitions):
        platform.delete_endpoint(healthy.id)
        healthy = platform.endpoint(receiver.url("/healthy"), ["*"], tenant="slowco")
    time.sleep(2)

    # Events of one tenant share an events partition, and the tasks of both endpoints
    # share a deliveries partition: the hanging one's tasks come first each time.
    events = [Envelope.create(type="order.created", tenant="slowco", data={"object": {"n": n}},
                              api_version=settings.api_version) for n in range(20)]
    platform.events(events)

    healthy_requests = receiver.wait_for("/healthy", 20, timeout=60)
    hanging_requests = receiver.wait_for("/hanging", 1)
    assert {r.event_id for r in healthy_requests} == {e.id for e in events}
    # Every healthy delivery landed before the first hanging attempt could even time out.
    assert max(r.at for r in healthy_requests) < \
        hanging_requests[0].at + settings.delivery_timeout
    # The per-endpoint in-flight limit caps what the hanging endpoint occupies.
    assert len(receiver.at("/hanging")) <= settings.endpoint_max_in_flight


def test_rate_limit_holds_when_events_arrive_one_by_one(
        worker: ServiceProcess, platform: Platform, receiver: Receiver) -> None:
    platform.endpoint(receiver.url("/limited"), ["*"], tenant="limitedco", rate_limit=1)
    time.sleep(2)
    # Events 0.3 s apart, each delivered before the next arrives: the endpoint's queue is
    # empty in between, and the limit (1 per second) must hold across that.
    for n in range(4):
        platform.event("order.created", tenant="limitedco", n=n)
        time.sleep(0.3)

    requests = receiver.wait_for("/limited", 4, timeout=30)
    gaps = [later.at - earlier.at for earlier, later in zip(requests, requests[1:], strict=False)]
    # The limiter spaces attempt *starts* 1 s apart; arrivals vary by each request's own
    # latency (the first also opens the connection), hence the slack.
    assert all(gap >= 0.7 for gap in gaps), gaps


def test_410_gone_disables_the_endpoint_and_stops_deliveries(
        worker: ServiceProcess, platform: Platform, receiver: Receiver,
        settings: Settings) -> None:
    def gone(_: int) -> tuple[int, dict[str, str], float]:
        return 410, {}, 0.0

    endpoint = platform.endpoint(receiver.on("/gone", gone), ["*"], tenant="goneco")
    time.sleep(2)
    first = platform.event("order.created", tenant="goneco", id="g1")
    receiver.wait_for("/gone", 1)

    def disabled_record(messages: list) -> list[Endpoint]:  # type: ignore[type-arg]
        return [Endpoint.from_json(m.value()) for m in messages
                if m.key() == endpoint.id.encode() and m.value()
                and json.loads(m.value())["disabled"]]

    [record] = disabled_record(read_topic(settings, platform.topics.endpoints,
                                          until=lambda ms: bool(disabled_record(ms))))
    assert record.disabled_reason and "410" in record.disabled_reason
    [dead] = dlq_tasks(settings, platform, endpoint.id, expect=1)
    assert dead.event.id == first.id and "410" in (dead.dlq_reason or "")

    notices = [Envelope.from_json(m.value()) for m in read_topic(
        settings, platform.topics.events,
        until=lambda ms: any(b'"endpoint.disabled"' in m.value() and endpoint.id.encode()
                             in m.value() for m in ms))]
    [notice] = [n for n in notices if n.type == "endpoint.disabled"
                and n.data["object"]["id"] == endpoint.id]
    assert notice.tenant == "goneco" and notice.data["object"]["url"] == endpoint.url

    platform.event("order.created", tenant="goneco", id="g2")
    time.sleep(4)
    assert len(receiver.at("/gone")) == 1


def test_a_full_tier_stops_reading_until_tasks_come_due_and_loses_nothing(
        worker: ServiceProcess, platform: Platform, receiver: Receiver,
        settings: Settings) -> None:
    endpoint = platform.endpoint(receiver.on("/flood", failing), ["*"], tenant="floodco")
    time.sleep(2)
    events = [Envelope.create(type="order.created", tenant="floodco", data={"object": {"n": n}},
                              api_version=settings.api_version) for n in range(6)]
    platform.events(events)

    first_tier = platform.topics.retry(platform.topics.retry_tiers[0])
    pattern = re.compile(rf'webhooks_unacked_messages{{topic="{re.escape(first_tier)}"}} (\S+)')
    held: list[float] = []
    deadline = time.monotonic() + 90
    while len(receiver.at("/flood")) < 6 * 4 and time.monotonic() < deadline:
        if match := pattern.search(worker.metrics()):
            held.append(float(match.group(1)))
        time.sleep(0.1)

    # All 6 tasks failed at once, yet the first tier never held more than its bound...
    assert held and max(held) <= MAX_WAITING
    assert MAX_WAITING in held  # ...and the bound was actually reached.
    dead = dlq_tasks(settings, platform, endpoint.id, expect=6)
    assert {t.event.id for t in dead} == {e.id for e in events}
    assert all(len(t.history) == 4 for t in dead)
