from confluent_kafka.admin import ConfigResource

from webhooks.kafka import create_admin
from webhooks.settings import Settings
from webhooks.topics import Topics, ensure_topics


def test_every_topic_exists_with_its_config(settings: Settings) -> None:
    topics = Topics.from_settings(settings)
    admin = create_admin(settings)
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
