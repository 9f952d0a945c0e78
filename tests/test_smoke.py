"""An envelope through the real broker and into the real ClickHouse engine, and back."""

from services.eventlog.clickhouse import apply_migrations, create_clickhouse_client
from tests.support.kafka import read_topic
from webhooks.acked_producer import AckedProducer
from webhooks.envelope import Envelope, format_timestamp
from webhooks.settings import Settings
from webhooks.topics import Topics


def test_envelope_round_trip(settings: Settings) -> None:
    envelope = Envelope.create(type="order.shipped", data={"object": {"id": "o_1"}},
                               tenant="acme", api_version=settings.api_version)
    topics = Topics.from_settings(settings)
    AckedProducer(settings.kafka).send(topics.events, envelope.to_json(), key=b"acme")

    [message] = read_topic(settings, topics.events, expect=1)
    received = Envelope.from_json(message.value())
    assert received == envelope

    client = create_clickhouse_client(settings.clickhouse_url)
    apply_migrations(client, settings.retention_days)
    client.insert(
        "events",
        [[received.tenant, message.partition(), message.offset(), received.id, received.type,
          received.api_version, received.created, message.value().decode()]],
        column_names=["tenant", "kafka_partition", "kafka_offset", "id", "type", "api_version",
                      "created", "envelope"],
    )
    rows = client.query(
        "SELECT id, type, formatDateTime(created, '%Y-%m-%dT%H:%i:%S.%fZ'), envelope FROM events "
        "WHERE tenant = {tenant:String}", parameters={"tenant": "acme"},
    ).result_rows
    assert rows == [(envelope.id, envelope.type, format_timestamp(envelope.created),
                     envelope.to_json().decode())]
