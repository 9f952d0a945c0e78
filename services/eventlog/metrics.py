"""Gauges the eventlog computes when scraped: DLQ depth, endpoints by state, ClickHouse's
memory, sink lag and the lag of every consumer group of the deployment.

The eventlog is the one service that sees ClickHouse (what was stored) and can ask Kafka
about every group, so the platform-wide gauges live here. Group lag comes from the
committed offsets in Kafka, not from the consumers themselves, so it keeps rising when
every fanout worker is down, which is exactly when an alert must fire. Each scrape costs
a few small ClickHouse queries and one Kafka round trip per group and topic partition;
``/metrics`` runs it off the event loop.

A family whose source does not answer is left out of that scrape (and logged at debug),
so ``/metrics`` still answers while Kafka or ClickHouse is down; the alert rules treat
a missing series as such.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError
from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, KafkaException
from confluent_kafka.admin import AdminClient
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from services.eventlog.event_store import EventStore
from webhooks.kafka import create_admin, create_consumer, watermarks
from webhooks.settings import Settings
from webhooks.topics import Topics

log = logging.getLogger(__name__)
KAFKA_TIMEOUT = 3.0

_ENDPOINTS_BY_STATE = (
    "SELECT JSONExtractBool(record, 'disabled') AS disabled, count() FROM ("
    "  SELECT argMax(record, kafka_offset) AS record, argMax(deleted, kafka_offset) AS deleted"
    "  FROM endpoints GROUP BY id) WHERE deleted = 0 GROUP BY disabled")

# ClickHouse's own accounting: all memory it tracks, and what its caches hold of that.
_ENGINE_MEMORY = (
    "SELECT sumIf(value, metric = 'MemoryTracking'),"
    " sumIf(value, metric LIKE '%CacheBytes')"
    " FROM system.metrics WHERE metric = 'MemoryTracking' OR metric LIKE '%CacheBytes'")


class _ProcessWide(Collector):
    """Everything in the process-wide registry (the sink's counters, process metrics)."""

    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()


class EventlogGauges(Collector):
    """``webhooks_dlq_depth``, ``webhooks_endpoints{state}``,
    ``webhooks_clickhouse_memory_bytes{kind}``, ``webhooks_sink_lag{topic}`` and
    ``webhooks_consumer_group_lag{group,topic}``, computed at each scrape."""

    def __init__(self, settings: Settings, client: Client) -> None:
        self.settings = settings
        self.client = client
        self.topics = Topics.from_settings(settings)
        self._positions = EventStore(client, self.topics)

    def describe(self) -> Iterable[Metric]:
        return []  # registering must not query anything

    def collect(self) -> Iterator[Metric]:
        try:
            yield from self._stored()
        except ClickHouseError as exc:
            log.debug("metrics: ClickHouse did not answer (%s)", exc)
        try:
            yield from self._lag()
        except (KafkaException, ClickHouseError) as exc:
            log.debug("metrics: Kafka did not answer (%s)", exc)

    def _stored(self) -> Iterator[Metric]:
        # count() of a MergeTree table comes from part metadata; a batch the sink inserted
        # twice counts twice until merged, a rare and short-lived overcount.
        depth = self.client.query("SELECT count() FROM dlq").result_rows[0][0]
        yield GaugeMetricFamily("webhooks_dlq_depth",
                                "Dead tasks in the dead-letter log (all tenants, within "
                                "retention; replayed ones stay listed).", value=int(depth))
        states = {"enabled": 0, "disabled": 0}
        for disabled, count in self.client.query(_ENDPOINTS_BY_STATE).result_rows:
            states["disabled" if disabled else "enabled"] += int(count)
        family = GaugeMetricFamily("webhooks_endpoints", "Endpoints by state.",
                                   labels=["state"])
        for state, count in states.items():
            family.add_metric([state], count)
        yield family
        tracked, caches = self.client.query(_ENGINE_MEMORY).result_rows[0]
        memory = GaugeMetricFamily(
            "webhooks_clickhouse_memory_bytes",
            "Memory ClickHouse accounts for: tracked (everything it tracks: queries, "
            "merges, parts' indexes, caches) and caches (its part of that). With the "
            "embedded engine (chdb://) this is inside the eventlog's own RSS.",
            labels=["kind"])
        memory.add_metric(["tracked"], int(tracked))
        memory.add_metric(["caches"], int(caches))
        yield memory

    def _lag(self) -> Iterator[Metric]:
        # Clients for this scrape only: nothing is left connected to a broker between
        # scrapes, and nothing needs closing when the app stops.
        admin = create_admin(self.settings.kafka)
        # Only reads watermarks: never subscribes, so it never joins its group.
        offsets = create_consumer(self.settings.kafka, "metrics-offsets")
        try:
            yield from self._lag_families(admin, offsets)
        finally:
            offsets.close()

    def _lag_families(self, admin: AdminClient, offsets: Consumer) -> Iterator[Metric]:
        ends: dict[str, dict[int, tuple[int, int]]] = {}

        def end_of(topic: str) -> dict[int, tuple[int, int]]:
            if topic not in ends:
                ends[topic] = watermarks(offsets, topic, KAFKA_TIMEOUT)
            return ends[topic]

        sink = GaugeMetricFamily(
            "webhooks_sink_lag", "Records on a topic the eventlog sink has not stored in "
            "ClickHouse yet (not yet visible in the API).", labels=["topic"])
        for topic in (self.topics.events, self.topics.attempts, self.topics.endpoints,
                      self.topics.dlq):
            stored = self._positions.watermarks(topic)
            sink.add_metric([topic], sum(max(0, high - stored.get(p, low))
                                         for p, (low, high) in end_of(topic).items()))
        yield sink
        groups = GaugeMetricFamily(
            "webhooks_consumer_group_lag", "Records not yet committed by a consumer group "
            "of this deployment, per topic (from the offsets committed in Kafka).",
            labels=["group", "topic"])
        for group, topic, lag in self._group_lags(admin, end_of):
            groups.add_metric([group, topic], lag)
        yield groups

    def _group_lags(self, admin: AdminClient,
                    end_of: Callable[[str], dict[int, tuple[int, int]]]
                    ) -> list[tuple[str, str, int]]:
        """(group, topic, lag) for every group named under this deployment's prefix."""
        prefix = self.settings.topic_prefix
        listed = admin.list_consumer_groups(request_timeout=KAFKA_TIMEOUT).result()
        names = sorted(g.group_id for g in listed.valid
                       if g.group_id.startswith((f"{prefix}.", f"{prefix}-")))
        lags: dict[tuple[str, str], int] = {}
        for name in names:
            future = admin.list_consumer_group_offsets(
                [ConsumerGroupTopicPartitions(name)], request_timeout=KAFKA_TIMEOUT)[name]
            for tp in future.result().topic_partitions or []:
                low, high = end_of(tp.topic).get(tp.partition, (0, 0))
                committed = tp.offset if tp.offset >= 0 else low
                key = (name, tp.topic)
                lags[key] = lags.get(key, 0) + max(0, high - committed)
        return [(group, topic, lag) for (group, topic), lag in sorted(lags.items())]


def eventlog_registry(settings: Settings, client: Client) -> CollectorRegistry:
    """What the eventlog's ``/metrics`` serves: the process-wide registry plus this app's
    gauges (a registry per app, so several apps in one process do not collide)."""
    registry = CollectorRegistry()
    registry.register(_ProcessWide())
    registry.register(EventlogGauges(settings, client))
    return registry
