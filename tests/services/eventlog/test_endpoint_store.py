"""EndpointStore against the real broker and the real ClickHouse engine."""

from __future__ import annotations

from services.eventlog.clickhouse import create_clickhouse_client
from services.eventlog.endpoint_store import EndpointStore
from tests.support.kafka import read_topic
from webhooks.acked_producer import AckedProducer
from webhooks.endpoints import Endpoint, EndpointSecret, new_endpoint_id
from webhooks.envelope import utcnow
from webhooks.kafka import create_consumer
from webhooks.settings import Settings
from webhooks.signing import generate_secret
from webhooks.topics import Topics


def test_a_write_acknowledged_by_kafka_stands_when_clickhouse_cannot_be_read(
        settings: Settings) -> None:
    # No migrations applied: the sink positions table does not exist, as when the store
    # fails right after the write.
    client = create_clickhouse_client(settings.clickhouse_url)
    topics = Topics.from_settings(settings)
    store = EndpointStore(client, AckedProducer(settings.kafka), topics,
                          offsets=create_consumer(settings.kafka, "offsets"),
                          keyring=settings.secrets_key, visibility_timeout=2.0)
    now = utcnow()
    endpoint = Endpoint(id=new_endpoint_id(), tenant="acme", url="https://example.com/hook",
                        events=["*"], secrets=[EndpointSecret(secret=generate_secret())],
                        created=now, updated=now)

    saved = store.save(endpoint)
    assert saved == endpoint.model_copy(update={"secrets": saved.secrets})
    assert saved.opened_secrets(settings.secrets_key) == endpoint.secrets  # sealed
    records = read_topic(settings, topics.endpoints, expect=1)
    assert [(r.key(), Endpoint.from_json(r.value())) for r in records] == [
        (endpoint.id.encode(), saved)]
