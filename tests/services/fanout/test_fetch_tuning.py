"""The retry tiers' fetch pacing, against a stand-in for aiokafka's request builder.

The real fetcher is exercised by every worker test (the tiers' records still come:
``test_retries.py``; the pacing is installed: ``test_routing.py``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiokafka.protocol.fetch import FetchRequest
from aiokafka.structs import TopicPartition

from services.fanout.fetch_tuning import TIER_FETCH_INTERVAL, TierFetchPacing, tier_fetch_interval
from webhooks.retry_schedule import RetrySchedule

TIERS = ("p.retry.1m", "p.retry.5m")


@dataclass
class Assignment:
    tps: frozenset[TopicPartition]

    def state_value(self, tp: TopicPartition) -> str:
        return f"state of {tp.topic}/{tp.partition}"


@dataclass
class Fetcher:
    """aiokafka's ``_get_actions_per_node``: one request naming every partition it is
    given, unless a request is in flight; the states it looked up are kept."""

    in_flight: bool = False
    looked_up: list[str] = field(default_factory=list)

    def _get_actions_per_node(self, assignment: Any) -> tuple[Any, ...]:
        self.looked_up = [assignment.state_value(tp) for tp in sorted(assignment.tps)]
        requests = []
        if not self.in_flight:
            topics: dict[str, list[tuple[int, int, int]]] = {}
            for tp in sorted(assignment.tps):
                topics.setdefault(tp.topic, []).append((tp.partition, 0, 1024))
            requests.append((1, FetchRequest(50, 1, 1024, 0, list(topics.items()))))
        return requests, {}, 0.2, False, []


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def named(requests: list[tuple[int, FetchRequest]]) -> set[str]:
    return {topic for _node, request in requests for topic, _ in request.topics}


def paced_fetcher() -> tuple[Fetcher, Clock, Assignment]:
    fetcher, clock = Fetcher(), Clock()
    assert TierFetchPacing(TIERS, 0.25, clock).install(fetcher)
    tps = [TopicPartition(topic, partition)
           for topic in ("p.events", "p.deliveries", *TIERS) for partition in (0, 1)]
    return fetcher, clock, Assignment(frozenset(tps))


def test_the_tiers_are_named_once_per_interval() -> None:
    fetcher, clock, assignment = paced_fetcher()
    requests, _, timeout, _, _ = fetcher._get_actions_per_node(assignment)
    assert named(requests) == {"p.events", "p.deliveries", *TIERS}
    assert timeout == 0.2

    clock.now += 0.1
    requests, _, timeout, _, _ = fetcher._get_actions_per_node(assignment)
    assert named(requests) == {"p.events", "p.deliveries"}
    assert fetcher.looked_up == ["state of p.deliveries/0", "state of p.deliveries/1",
                                 "state of p.events/0", "state of p.events/1"]
    assert abs(timeout - 0.15) < 1e-9  # wakes up when the tiers are due

    clock.now += 0.15
    requests, _, _, _, _ = fetcher._get_actions_per_node(assignment)
    assert named(requests) == {"p.events", "p.deliveries", *TIERS}


def test_a_due_fetch_that_was_not_sent_stays_due() -> None:
    fetcher, clock, assignment = paced_fetcher()
    fetcher._get_actions_per_node(assignment)
    clock.now += 0.3
    fetcher.in_flight = True  # nothing is sent this time round
    assert fetcher._get_actions_per_node(assignment)[0] == []
    clock.now += 0.01
    fetcher.in_flight = False
    assert set(TIERS) <= named(fetcher._get_actions_per_node(assignment)[0])


def test_installing_twice_keeps_one_pacing() -> None:
    fetcher, clock, assignment = paced_fetcher()
    assert TierFetchPacing(TIERS, 10.0, clock).install(fetcher)
    fetcher._get_actions_per_node(assignment)
    clock.now += 0.3  # past the first pacing's interval, within the second's
    assert set(TIERS) <= named(fetcher._get_actions_per_node(assignment)[0])


def test_a_fetcher_without_the_builder_is_left_alone() -> None:
    assert not TierFetchPacing(TIERS, 0.25).install(object())


def test_the_interval_is_a_tenth_of_a_short_tier() -> None:
    assert tier_fetch_interval(RetrySchedule.parse("1m,5m,30m").delays) == TIER_FETCH_INTERVAL
    assert tier_fetch_interval(RetrySchedule.parse("1s,2s").delays) == 0.1
    assert tier_fetch_interval(()) == TIER_FETCH_INTERVAL
