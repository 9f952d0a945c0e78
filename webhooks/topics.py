"""Topic names, defined once, and their creation with the right settings."""

from __future__ import annotations

from dataclasses import dataclass, field

from confluent_kafka.admin import AdminClient, NewTopic

from webhooks.retry import RetrySchedule
from webhooks.settings import Settings

DAY_MS = 24 * 3600 * 1000


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
        schedule = RetrySchedule.parse(settings.retry_schedule)
        return cls(prefix=settings.topic_prefix, retry_tiers=tuple(schedule.tier_names))

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
    def deliveries(self) -> str:
        """Delivery tasks (event x endpoint) due now, keyed by endpoint id."""
        return f"{self.prefix}.deliveries"

    def retry(self, tier: str) -> str:
        """The topic where tasks wait out retry tier ``tier`` (e.g. ``5m``)."""
        return f"{self.prefix}.retry.{tier}"

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

    def specs(self, retention_days: int = 30) -> list[TopicSpec]:
        """Every topic with its configuration."""
        retention = {"retention.ms": str(retention_days * DAY_MS)}
        compacted = {"cleanup.policy": "compact", "min.compaction.lag.ms": "60000"}
        specs = [
            TopicSpec(self.ingest, retention),
            TopicSpec(self.ingest_rejected, retention),
            TopicSpec(self.events, retention),
            TopicSpec(self.endpoints, compacted),
            TopicSpec(self.deliveries, retention),
            TopicSpec(self.dlq, {"retention.ms": str(max(retention_days, 30) * DAY_MS)}),
            TopicSpec(self.attempts, retention),
            TopicSpec(self.idempotency, {"cleanup.policy": "compact,delete",
                                         "retention.ms": str(7 * DAY_MS)}),
        ]
        specs += [TopicSpec(self.retry(tier), retention) for tier in self.retry_tiers]
        return specs


def ensure_topics(settings: Settings, timeout: float = 30.0) -> list[str]:
    """Create any missing topic (idempotent); return the names that were created."""
    admin = AdminClient(settings.kafka_client_config())
    existing = set(admin.list_topics(timeout=timeout).topics)
    topics = Topics.from_settings(settings)
    wanted = [spec for spec in topics.specs(settings.retention_days) if spec.name not in existing]
    if not wanted:
        return []
    futures = admin.create_topics(
        [
            NewTopic(
                spec.name,
                num_partitions=settings.topic_partitions,
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
