"""Prometheus metrics of the ingest service, on a registry owned by one app instance.

A registry per instance (not the global one) lets tests and benchmarks build several
apps in one process without duplicate-registration errors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector


class IngestMetrics:
    """Accepted, rejected (by reason), duplicate events and produce latency, by source."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.accepted = Counter("webhooks_ingest_accepted_total",
                                "Events appended to the events topic.", ["source"],
                                registry=self.registry)
        self.rejected = Counter("webhooks_ingest_rejected_total",
                                "Events refused, by reason (malformed_json, schema, "
                                "unknown_field, too_large, unauthorized, unavailable, ...).",
                                ["source", "reason"], registry=self.registry)
        self.duplicates = Counter("webhooks_ingest_duplicate_total",
                                  "Repeats of an accepted id or Idempotency-Key, answered "
                                  "with the original and not appended.", ["source"],
                                  registry=self.registry)
        self.ledger_records_read = Counter(
            "webhooks_ingest_ledger_records_read_total",
            "Idempotency-topic records this process applied to its index: the whole topic "
            "when it builds a new index, only the records written since when it restarts "
            "on the one it kept.", registry=self.registry)
        self.produce_latency = Histogram(
            "webhooks_ingest_produce_latency_seconds",
            "From produce() to the broker's acknowledgement of every events-topic write of "
            "one request or intake poll.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry)

    def watch_index_memory(self, memory: Callable[[], dict[str, int]]) -> None:
        """Export ``memory()`` (part -> bytes) as ``webhooks_ingest_index_memory_bytes``."""
        self.registry.register(_IndexMemoryCollector(memory))


class _IndexMemoryCollector(Collector):
    def __init__(self, memory: Callable[[], dict[str, int]]) -> None:
        self._memory = memory

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "webhooks_ingest_index_memory_bytes",
            "Memory of the idempotency index's bounded RocksDB budgets, by part "
            "(memtables, block_cache).", labels=["part"])
        for part, size in sorted(self._memory().items()):
            family.add_metric([part], size)
        yield family
