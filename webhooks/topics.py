"""Topic names, defined once, and their creation with the right settings."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
    ResourceType,
    TopicMetadata,
)

from webhooks.kafka import KafkaConnection, create_admin
from webhooks.settings import Settings

DAY_MS = 24 * 3600 * 1000
HOUR_MS = 3600 * 1000
IDEMPOTENCY_RETENTION_MARGIN_MS = 2 * HOUR_MS
"""How much longer than ``WEBHOOKS_IDEMPOTENCY_WINDOW`` the idempotency topic keeps its
records: ingest honours an entry for the window and keeps it an hour longer (clock skew
between replicas), so its record must still be there for a replica that (re)builds."""

MIN_INSYNC = "min.insync.replicas"

KEPT_IN_LINE = ("retention.ms", "max.compaction.lag.ms", "segment.ms", MIN_INSYNC)
"""Configuration that :func:`ensure_topics` also brings existing topics in line with (the
rest, e.g. the cleanup policy, is set once, when a topic is created)."""

T = TypeVar("T")


@dataclass(frozen=True)
class TopicSpec:
    """A topic and the configuration it is created with."""

    name: str
    config: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Topics:
    """Every topic of the platform under one prefix (``webhooks`` unless configured).

    Tests give each module its own prefix so that they can share one broker.
    """

    prefix: str
    retry_tiers: tuple[str, ...]

    @classmethod
    def from_settings(cls, settings: Settings) -> Topics:
        """The topics of ``settings``: its prefix, one retry topic per tier of its schedule."""
        return cls(prefix=settings.topic_prefix,
                   retry_tiers=tuple(settings.retry_schedule.tier_names))

    @property
    def ingest(self) -> str:
        """Raw JSON events from producers that publish straight to Kafka."""
        return f"{self.prefix}.ingest"

    @property
    def ingest_rejected(self) -> str:
        """Intake messages that failed validation, with the reason in headers."""
        return f"{self.prefix}.ingest.rejected"

    @property
    def events(self) -> str:
        """Envelopes, keyed by tenant so one tenant's events keep their order."""
        return f"{self.prefix}.events"

    @property
    def endpoints(self) -> str:
        """Compacted endpoint configuration, keyed by endpoint id."""
        return f"{self.prefix}.endpoints"

    @property
    def registry(self) -> str:
        """Compacted tenants and API keys (``tenant/<id>``, ``key/<id>``): see webhooks.registry."""
        return f"{self.prefix}.registry"

    @property
    def endpoint_health(self) -> str:
        """Compacted failure streaks of failing endpoints (auto-disable), keyed by endpoint id."""
        return f"{self.prefix}.endpoint-health"

    @property
    def deliveries(self) -> str:
        """Delivery tasks (event x endpoint) due now, keyed by endpoint id."""
        return f"{self.prefix}.deliveries"

    @property
    def ordered(self) -> str:
        """Tasks of ordered endpoints, keyed by endpoint id: each endpoint's delivered one
        at a time, in the order they were written."""
        return f"{self.prefix}.ordered"

    def retry(self, tier: str) -> str:
        """The topic where tasks wait out retry tier ``tier`` (e.g. ``5m``)."""
        return f"{self.prefix}.retry.{tier}"

    @property
    def keyed_by_endpoint(self) -> tuple[str, ...]:
        """The topics the fanout consumes that are keyed by endpoint id: an endpoint's
        records are in the same partition number of each (see :func:`uneven_partitions`)."""
        return (self.deliveries, self.ordered, *(self.retry(tier) for tier in self.retry_tiers))

    @property
    def dlq(self) -> str:
        """Tasks whose every attempt failed, with their attempt history."""
        return f"{self.prefix}.dlq"

    @property
    def attempts(self) -> str:
        """One record per delivery attempt."""
        return f"{self.prefix}.attempts"

    @property
    def idempotency(self) -> str:
        """Compacted record of accepted event ids / idempotency keys, for ingest dedupe."""
        return f"{self.prefix}.idempotency"

    def specs(self, retention_days: int = 30, idempotency_window: float = 24 * 3600.0,
              min_insync_replicas: int = 1) -> list[TopicSpec]:
        """Every topic with its configuration (``idempotency_window`` in seconds).

        ``min_insync_replicas``: how many replicas must have a record before an ``acks=all``
        write of it is acknowledged (every producer of the platform writes so).
        """
        replicas = {MIN_INSYNC: str(min_insync_replicas)}
        retention = {"retention.ms": str(retention_days * DAY_MS), **replicas}
        compacted = {"cleanup.policy": "compact", "min.compaction.lag.ms": "60000", **replicas}
        specs = [
            TopicSpec(self.ingest, retention),
            TopicSpec(self.ingest_rejected, retention),
            TopicSpec(self.events, retention),
            # A superseded endpoint record may hold secrets under a retired key (or, from
            # before encryption, plain ones): compacted away within a day at the latest
            # (Kafka also rolls the active segment on the next write after that long).
            TopicSpec(self.endpoints, {**compacted, "max.compaction.lag.ms": str(DAY_MS)}),
            TopicSpec(self.endpoint_health, compacted),
            TopicSpec(self.registry, compacted),
            TopicSpec(self.deliveries, retention),
            TopicSpec(self.ordered, retention),
            TopicSpec(self.dlq, {"retention.ms": str(max(retention_days, 30) * DAY_MS),
                                 **replicas}),
            TopicSpec(self.attempts, retention),
            TopicSpec(self.idempotency, {**idempotency_config(idempotency_window),
                                         **replicas}),
        ]
        specs += [TopicSpec(self.retry(tier), retention) for tier in self.retry_tiers]
        return specs


def idempotency_config(window: float) -> dict[str, str]:
    """The idempotency topic's configuration for a window of ``window`` seconds.

    Its retention follows the window: shorter, and a replica that builds its index would
    miss entries still honoured (a window over the old fixed 7 days did); much longer, and
    it reads records long expired (the old 7 days against the default 24 h: 7x the records).
    Segments roll every quarter window (at least hourly), since retention deletes whole
    segments and never the one being written: records go at most ~1.25 windows old.
    """
    window_ms = int(window * 1000)
    return {"cleanup.policy": "compact,delete",
            "retention.ms": str(window_ms + IDEMPOTENCY_RETENTION_MARGIN_MS),
            "segment.ms": str(max(HOUR_MS, window_ms // 4))}


def ensure_topics(settings: Settings, timeout: float = 30.0) -> list[str]:
    """Create any missing topic (with the installed topics' partition count, the
    deliveries topic's or else the events topic's, on a platform already installed; else
    ``WEBHOOKS_TOPIC_PARTITIONS``) and bring the retention (and compaction lag, segment
    roll and ``min.insync.replicas``) of existing ones in line with the settings, the
    idempotency topic's with ``WEBHOOKS_IDEMPOTENCY_WINDOW`` (idempotent); return the
    names that were created.

    ``min.insync.replicas`` is ``WEBHOOKS_TOPIC_MIN_INSYNC_REPLICAS`` capped at the
    topic's replication factor (a topic of one replica takes writes with one).
    """
    admin = AdminClient(settings.kafka.client_config())
    existing = admin.list_topics(timeout=timeout).topics
    topics = Topics.from_settings(settings)
    specs = topics.specs(settings.retention_days, settings.idempotency_window,
                         min(settings.topic_min_insync_replicas, settings.topic_replication))
    _keep_in_line(admin, [_capped(spec, _replication_of(existing[spec.name]))
                          for spec in specs if spec.name in existing], timeout)
    wanted = [spec for spec in specs if spec.name not in existing]
    if not wanted:
        return []
    partitions = settings.topic_partitions
    installed = next((name for name in (topics.deliveries, topics.events) if name in existing),
                     None)
    if installed is not None:
        # An installed platform keeps its count for topics a later version or a longer
        # retry schedule adds: an endpoint's tasks must stay in the same partition number
        # of every topic (one worker holds them, and its rate limit and order with them).
        partitions = len(existing[installed].partitions)
    futures = admin.create_topics(
        [
            NewTopic(
                spec.name,
                num_partitions=partitions,
                replication_factor=settings.topic_replication,
                config=spec.config,
            )
            for spec in wanted
        ],
        operation_timeout=timeout,
    )
    created = []
    for name, future in futures.items():
        try:
            future.result()
            created.append(name)
        except Exception as exc:  # another replica may have created it meanwhile
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise
    return created


def _replication_of(topic: TopicMetadata) -> int:
    """The replication factor of an existing topic (its first partition's replicas)."""
    partitions = list(topic.partitions.values())
    return len(partitions[0].replicas) if partitions else 1


def _capped(spec: TopicSpec, replication: int) -> TopicSpec:
    """``spec`` with ``min.insync.replicas`` at most ``replication``: a topic created with
    fewer replicas than the settings now ask for must still take writes."""
    if MIN_INSYNC not in spec.config or int(spec.config[MIN_INSYNC]) <= replication:
        return spec
    return TopicSpec(spec.name, {**spec.config, MIN_INSYNC: str(replication)})


def _keep_in_line(admin: AdminClient, specs: list[TopicSpec], timeout: float) -> None:
    """Set each :data:`KEPT_IN_LINE` entry where an existing topic's differs from its spec
    (a changed WEBHOOKS_RETENTION_DAYS, a topic created by an older version); other
    configuration of existing topics is left alone."""
    specs = [spec for spec in specs if any(name in spec.config for name in KEPT_IN_LINE)]
    if not specs:
        return

    def describe() -> dict[str, dict[str, ConfigEntry]]:
        described = admin.describe_configs(
            [ConfigResource(ResourceType.TOPIC, spec.name) for spec in specs],
            request_timeout=timeout)
        return {resource.name: future.result(timeout) for resource, future in described.items()}

    current = when_known(describe, timeout)
    changes = []
    for spec in specs:
        config = current[spec.name]
        differ = [name for name in KEPT_IN_LINE if name in spec.config
                  and (name not in config or config[name].value != spec.config[name])]
        if differ:
            changes.append(ConfigResource(ResourceType.TOPIC, spec.name, incremental_configs=[
                ConfigEntry(name, spec.config[name], incremental_operation=AlterConfigOpType.SET)
                for name in differ]))
    if changes:
        def alter() -> None:
            for future in admin.incremental_alter_configs(changes,
                                                          request_timeout=timeout).values():
                future.result(timeout)

        when_known(alter, timeout)


def when_known(request: Callable[[], T], timeout: float, pause: float = 0.2) -> T:
    """``request()``, asked again while it fails with UNKNOWN_TOPIC_OR_PART, for up to
    ``timeout`` seconds.

    A topic just created is in the metadata of the controller first: the broker that
    answers a describe or alter of its configuration may not know it yet for a moment
    (seen on a 3-broker cluster right after the topic's creation). Setting the same
    configuration again is harmless, so asking again is safe.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            return request()
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            unknown = (isinstance(error, KafkaError)
                       and error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART)
            if not unknown or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)


def uneven_partitions(partitions: Mapping[str, int]) -> str | None:
    """A warning when the topics of ``partitions`` (name -> partition count) do not all
    have the same count; None when they do.

    One endpoint's records have one partition number in every topic keyed by endpoint
    id. Faust assigns topics that one consumer group reads and that have the same
    partition count together (partition n of each to the same worker), so one worker
    makes all of an endpoint's attempts: its rate limit and order hold across workers.
    With differing counts an endpoint's records can be on several workers.
    """
    counts = Counter(partitions.values())
    if len(counts) <= 1:
        return None
    usual = counts.most_common(1)[0][0]
    odd = ", ".join(f"{name} has {count}" for name, count in sorted(partitions.items())
                    if count != usual)
    return (f"topics keyed by endpoint differ in partition count ({odd}; the others "
            f"{usual}): an endpoint's tasks can be on different workers, so its rate "
            "limit and order hold only per worker; give them all the same count")


def partition_counts(connection: KafkaConnection, names: Iterable[str],
                     timeout: float = 30.0) -> dict[str, int]:
    """Partitions of each existing topic of ``names``."""
    existing = create_admin(connection).list_topics(timeout=timeout).topics
    return {name: len(existing[name].partitions) for name in names if name in existing}
