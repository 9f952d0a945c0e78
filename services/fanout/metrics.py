"""Prometheus metrics of one fanout app, in their own registry.

A registry per app (rather than the global one) lets several apps live in one process,
as they do in tests, without duplicate-registration errors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import faust
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

LagReader = Callable[[], Iterable[tuple[str, int, int]]]


class FanoutMetrics:
    """Deliveries by outcome and error class, latency, retries by tier, DLQ, in-flight,
    consumer lag."""

    def __init__(self, in_flight: Callable[[], float], waiting: Callable[[], float],
                 lag: LagReader, unacked: Callable[[], dict[str, int]]) -> None:
        self.registry = CollectorRegistry()
        self.deliveries = Counter(
            "webhooks_deliveries", "Delivery attempts by outcome.", ["outcome"],
            registry=self.registry)
        self.latency = Histogram(
            "webhooks_delivery_latency_seconds", "HTTP attempt latency.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry)
        self.delivery_errors = Counter(
            "webhooks_delivery_errors", "Failed attempts by error class (timeout, connect, "
            "http_status, …).", ["error"], registry=self.registry)
        self.retries = Counter(
            "webhooks_retries", "Tasks moved to a retry tier.", ["tier"], registry=self.registry)
        self.deferred = Counter(
            "webhooks_deliveries_deferred",
            "Due tasks parked in a retry tier, without an attempt, as their endpoint's "
            "queue was full.", registry=self.registry)
        self.dead_lettered = Counter(
            "webhooks_dead_lettered", "Tasks moved to the DLQ.", registry=self.registry)
        self.tasks_created = Counter(
            "webhooks_tasks_created", "Delivery tasks created by matching.", registry=self.registry)
        self.endpoints_disabled = Counter(
            "webhooks_endpoints_disabled", "Endpoints disabled by the worker.", ["reason"],
            registry=self.registry)
        in_flight_gauge = Gauge("webhooks_deliveries_in_flight", "HTTP attempts running now.",
                                registry=self.registry)
        in_flight_gauge.set_function(in_flight)
        waiting_gauge = Gauge("webhooks_tasks_waiting", "Retry tasks held until due.",
                              registry=self.registry)
        waiting_gauge.set_function(waiting)
        self.registry.register(_LagCollector(lag))
        self.registry.register(_UnackedCollector(unacked))


def consumer_lag(app: faust.App) -> Iterable[tuple[str, int, int]]:
    """(topic, partition, highwater - committed) for every partition ``app`` consumes."""
    try:
        assignment = app.consumer.assignment()
    except Exception:  # not started yet
        return []
    # The consumer's own record: the group's committed offsets as read at assignment,
    # updated by every commit since. (The monitor's holds only this process's commits, so
    # after a restart an idle partition would show its whole length as lag.)
    committed = app.consumer._committed_offset
    lags: list[tuple[str, int, int]] = []
    for tp in assignment:
        try:
            highwater = app.consumer.highwater(tp)
        except Exception:
            continue
        if highwater is None:
            continue
        lags.append((tp.topic, tp.partition, max(0, highwater - (committed.get(tp) or 0))))
    return lags


class _UnackedCollector(Collector):
    def __init__(self, unacked: Callable[[], dict[str, int]]) -> None:
        self._unacked = unacked

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "webhooks_unacked_messages",
            "Consumed messages whose outcome is not durable yet (held, queued or running).",
            labels=["topic"])
        for topic, count in sorted(self._unacked().items()):
            family.add_metric([topic], count)
        yield family


class _LagCollector(Collector):
    def __init__(self, lag: LagReader) -> None:
        self._lag = lag

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily("webhooks_consumer_lag",
                                   "Messages not yet committed, per assigned partition.",
                                   labels=["topic", "partition"])
        for topic, partition, lag in self._lag():
            family.add_metric([topic, str(partition)], lag)
        yield family
