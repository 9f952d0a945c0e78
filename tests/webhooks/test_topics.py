import uuid

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import ConfigResource, NewTopic

from tests.support.eventlog import eventually
from webhooks.kafka import create_admin
from webhooks.settings import Settings
from webhooks.topics import (
    DAY_MS,
    IDEMPOTENCY_RETENTION_MARGIN_MS,
    Topics,
    ensure_topics,
    uneven_partitions,
    when_known,
)


def test_every_topic_exists_with_its_config(settings: Settings) -> None:
    topics = Topics.from_settings(settings)
    admin = create_admin(settings.kafka)
    existing = admin.list_topics(timeout=10).topics
    names = [spec.name for spec in topics.specs()]
    assert f"{settings.topic_prefix}.retry.3s" in names
    for name in names:
        assert name in existing
        assert len(existing[name].partitions) == settings.topic_partitions

    resource = ConfigResource(ConfigResource.Type.TOPIC, topics.endpoints)
    config = admin.describe_configs([resource])[resource].result()
    assert config["cleanup.policy"].value == "compact"


def test_ensure_topics_is_idempotent(settings: Settings) -> None:
    assert ensure_topics(settings) == []


def test_topics_added_later_take_the_installed_partition_count(
        settings: Settings, make_settings) -> None:  # type: ignore[no-untyped-def]
    """A longer retry schedule (or a later version's new topic) on an install made with
    another partition count: the new topic matches the installed ones, not the setting."""
    grown = make_settings(topic_prefix=settings.topic_prefix,
                          topic_partitions=settings.topic_partitions + 2,
                          retry_schedule="3s,7s")
    topics = Topics.from_settings(grown)
    assert ensure_topics(grown) == [topics.retry("7s")]
    admin = create_admin(grown.kafka)
    # The topic shows in the metadata moments after the controller created it.
    eventually(lambda: topics.retry("7s") in admin.list_topics(timeout=10).topics, timeout=10)
    created = admin.list_topics(timeout=10).topics[topics.retry("7s")]
    assert len(created.partitions) == settings.topic_partitions


def test_a_changed_retention_reaches_existing_topics(
        settings: Settings, make_settings) -> None:  # type: ignore[no-untyped-def]
    shorter = make_settings(topic_prefix=settings.topic_prefix, retention_days=7)
    topics = Topics.from_settings(shorter)
    admin = create_admin(shorter.kafka)

    def retention_days(topic: str) -> float:
        resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
        return int(admin.describe_configs([resource])[resource].result()["retention.ms"].value) \
            / DAY_MS

    assert retention_days(topics.events) == settings.retention_days == 30
    assert ensure_topics(shorter) == []  # nothing created, only reconfigured
    # The controller accepted the change; the broker applies it from metadata moments later.
    eventually(lambda: retention_days(topics.events) == 7, timeout=10)
    assert retention_days(topics.retry(topics.retry_tiers[0])) == 7
    assert retention_days(topics.dlq) == 30  # dead letters are kept at least 30 days
    assert ensure_topics(shorter) == []  # idempotent
    assert retention_days(topics.events) == 7


def test_an_endpoints_topic_of_an_older_version_gets_its_compaction_bound(
        make_settings) -> None:  # type: ignore[no-untyped-def]
    """Superseded endpoint records (secrets under a retired key, or plain ones from before
    encryption) leave within a day: also on a topic created before that bound existed."""
    older = make_settings(topic_prefix=f"old{uuid.uuid4().hex[:8]}")
    topics = Topics.from_settings(older)
    admin = create_admin(older.kafka)
    admin.create_topics([NewTopic(topics.endpoints, 1, 1, config={
        "cleanup.policy": "compact"})])[topics.endpoints].result(30)

    def lag() -> str | None:
        resource = ConfigResource(ConfigResource.Type.TOPIC, topics.endpoints)
        try:
            config = admin.describe_configs([resource])[resource].result()
        except KafkaException:  # the new topic is not known to the broker yet
            return None
        return config["max.compaction.lag.ms"].value

    assert eventually(lag, timeout=10) != str(DAY_MS)  # the broker's default (no bound)
    ensure_topics(older)
    eventually(lambda: lag() == str(DAY_MS), timeout=10)
    assert ensure_topics(older) == []


def test_the_idempotency_topic_keeps_its_records_for_the_window(
        settings: Settings, make_settings) -> None:  # type: ignore[no-untyped-def]
    """Ingest builds its index from this topic: records of ids still recognised must be
    there, and records long expired need not be read (the retention follows the window)."""
    topics = Topics.from_settings(settings)
    admin = create_admin(settings.kafka)

    def config(name: str) -> int:
        resource = ConfigResource(ConfigResource.Type.TOPIC, topics.idempotency)
        return int(admin.describe_configs([resource])[resource].result()[name].value)

    assert config("retention.ms") == DAY_MS + IDEMPOTENCY_RETENTION_MARGIN_MS  # 24 h window
    assert config("segment.ms") == DAY_MS // 4
    ten_days = make_settings(topic_prefix=settings.topic_prefix, idempotency_window="10d")
    assert ensure_topics(ten_days) == []  # the existing topic is brought in line
    eventually(lambda: config("retention.ms") == 10 * DAY_MS + IDEMPOTENCY_RETENTION_MARGIN_MS,
               timeout=10)
    assert config("segment.ms") == 10 * DAY_MS // 4


def test_min_insync_replicas_is_capped_at_each_topics_replication(
        make_settings) -> None:  # type: ignore[no-untyped-def]
    """The session broker has one replica per topic: asking for 2 (the default) sets 1,
    which still takes writes; a topic of the cluster tests gets 2 of its 3
    (tests/faults/test_cluster.py)."""
    settings = make_settings(topic_prefix=f"isr{uuid.uuid4().hex[:8]}")
    assert settings.topic_min_insync_replicas == 2
    topics = Topics.from_settings(settings)
    specs = topics.specs(30, min_insync_replicas=2)
    assert {spec.config["min.insync.replicas"] for spec in specs} == {"2"}
    admin = create_admin(settings.kafka)
    # An existing topic with another value is brought in line, capped at its one replica.
    admin.create_topics([NewTopic(topics.events, 1, 1, config={
        "min.insync.replicas": "3"})])[topics.events].result(30)

    def min_insync(topic: str) -> str | None:
        resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
        try:
            return admin.describe_configs([resource])[resource].result()[
                "min.insync.replicas"].value
        except KafkaException:  # not known to the broker yet
            return None

    eventually(lambda: min_insync(topics.events) == "3", timeout=10)  # the topic is known
    ensure_topics(settings)
    eventually(lambda: min_insync(topics.events) == "1", timeout=10)
    assert min_insync(topics.dlq) == "1"


def test_topics_keyed_by_endpoint_are_the_fanouts_task_topics() -> None:
    topics = Topics(prefix="p", retry_tiers=("1s", "5m"))
    assert topics.keyed_by_endpoint == ("p.deliveries", "p.ordered", "p.retry.1s", "p.retry.5m")


def test_uneven_partition_counts_are_named_in_one_warning() -> None:
    assert uneven_partitions({}) is None
    assert uneven_partitions({"p.deliveries": 6, "p.ordered": 6, "p.retry.1s": 6}) is None
    warning = uneven_partitions({"p.deliveries": 6, "p.ordered": 6, "p.retry.1s": 12})
    assert warning is not None and "\n" not in warning
    assert "p.retry.1s has 12" in warning and "the others 6" in warning
    assert "p.deliveries" not in warning and "rate limit" in warning


def test_a_topic_not_yet_known_to_the_broker_asked_is_asked_about_again() -> None:
    answers: list[object] = [KafkaException(KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART)),
                             KafkaException(KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART)),
                             {"t": "config"}]

    def request() -> object:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert when_known(request, timeout=5, pause=0.01) == {"t": "config"}
    assert answers == []


def test_other_errors_and_a_topic_that_stays_unknown_are_raised() -> None:
    def denied() -> None:
        raise KafkaException(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED))

    def unknown() -> None:
        raise KafkaException(KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART))

    with pytest.raises(KafkaException, match="TOPIC_AUTHORIZATION_FAILED"):
        when_known(denied, timeout=5, pause=0.01)
    with pytest.raises(KafkaException, match="UNKNOWN_TOPIC_OR_PART"):
        when_known(unknown, timeout=0.05, pause=0.01)
