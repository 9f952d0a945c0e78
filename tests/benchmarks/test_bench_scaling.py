"""The scaling benchmark's pure parts: tenants spread over partitions, and the pauses and
duplicates it reads from the receiver's arrivals."""

from __future__ import annotations

import pytest

from benchmarks.bench_scaling import Arrival, longest_gap, partition_of, spread_tenants, stretches


def test_tenants_cover_every_partition_once_and_divisors_evenly() -> None:
    tenants = spread_tenants(24)
    assert sorted(partition_of(tenant, 24) for tenant in tenants) == list(range(24))
    for partitions in (6, 12):
        placed = [partition_of(tenant, partitions) for tenant in tenants]
        assert {placed.count(p) for p in range(partitions)} == {24 // partitions}


def test_a_gap_counts_in_the_stretch_where_it_ends() -> None:
    times = [0.0, 0.1, 0.2, 3.0, 3.1]
    assert longest_gap(times, 1.0, 3.0) == 0.0  # 0.2 -> 3.0 ends after it
    assert longest_gap(times, 3.0, 4.0) == pytest.approx(2.8)
    assert longest_gap(times, 3.05, 4.0) == pytest.approx(0.1)
    assert longest_gap([], 0.0, 1.0) == 0.0


def test_stretches_find_each_pause_its_duplicates_and_its_slowest_delivery() -> None:
    def at(t: float, lane: str, n: int, sent: float | None = None) -> Arrival:
        return Arrival(t, f"/stack/{lane}/0", n, t - 0.01 if sent is None else sent)

    arrivals = [
        # steady: both lanes every 0.1 s
        *(at(t / 10, lane, t) for t in range(10) for lane in ("a", "b")),
        # join at 1.0: everything stops until 2.5, event 10 waited since 1.0
        at(2.5, "a", 10, sent=1.0), at(2.5, "b", 10, sent=1.0),
        # kill at 3.0: lane b stops until 6.0 and repeats event 10; lane a goes on
        *(at(3.0 + t / 10, "a", 11 + t) for t in range(30)),
        at(6.0, "b", 10, sent=1.0), at(6.1, "b", 41),
    ]
    found = stretches(arrivals, [("steady", 0.0), ("join", 1.0), ("kill", 3.0)],
                      lane=lambda path: path.split("/")[2])
    assert found["steady"] == {"longest_gap_s": 0.1, "longest_lane_gap_s": 0.1,
                               "duplicates": 0, "slowest_s": 0.01}
    assert found["join"]["longest_gap_s"] == 1.6  # 0.9 -> 2.5
    assert found["join"]["slowest_s"] == 1.5
    assert found["kill"]["longest_gap_s"] == 0.5  # 2.5 -> 3.0; then lane a went on
    assert found["kill"]["longest_lane_gap_s"] == 3.5  # lane b: 2.5 -> 6.0
    assert found["kill"]["duplicates"] == 1
    assert found["kill"]["slowest_s"] == 5.0
