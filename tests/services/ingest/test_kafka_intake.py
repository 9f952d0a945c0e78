"""The Kafka intake: raw events on the ingest topic, through the same validation, to events."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable

import pytest
from confluent_kafka import Consumer, TopicPartition
from fastapi.testclient import TestClient

from tests.services.ingest.conftest import ACME, envelopes_on
from tests.support.kafka import read_topic
from webhooks.acked_producer import AckedProducer
from webhooks.envelope import Envelope
from webhooks.publisher import EventPublisher, PublishError
from webhooks.settings import Settings
from webhooks.topics import Topics, ensure_topics

MAX_BODY = 2048


@pytest.fixture(scope="module")
def settings(make_settings: Callable[..., Settings]) -> Settings:
    """Small body limit so an oversized intake message is cheap to make."""
    module_settings = make_settings(max_body_bytes=MAX_BODY)
    ensure_topics(module_settings)
    return module_settings


def produce_raw(settings: Settings, values: list[bytes],
                headers: list[tuple[str, bytes]] | None = None) -> None:
    producer = AckedProducer(settings.kafka)
    for value in values:
        producer.send(Topics.from_settings(settings).ingest, value, key=b"acme",
                     headers=headers)


def headers_of(message) -> dict[str, str]:
    return {key: value.decode() for key, value in message.headers() or []}


def test_good_messages_become_envelopes_and_bad_ones_are_rejected_with_reasons(
        ingest: TestClient, settings: Settings) -> None:
    topics = Topics.from_settings(settings)
    mark = uuid.uuid4().hex
    good = [
        json.dumps({"type": "order.shipped", "data": {"marker": mark}, "tenant": "acme"}),
        json.dumps({"type": "order.paid", "data": {"marker": mark}, "tenant": "globex",
                    "id": f"evt_k{mark}", "created": "2026-11-22T10:30:00Z"}),
    ]
    bad = {
        '{"type": "order.shipped", "data": {"marker": "' + mark + '"}': ("malformed_json", "body:"),
        json.dumps({"type": "order.shipped", "data": {"marker": mark}}):
            ("tenant_required", "tenant:"),
        json.dumps({"type": "order.shipped", "data": {"marker": mark}, "tenant": "acme",
                    "priority": 1}): ("unknown_field", "priority: unknown field"),
        json.dumps({"type": "OrderShipped", "data": {"marker": mark}, "tenant": "acme"}):
            ("schema", "type: must be lower-case"),
        json.dumps({"type": "order.shipped", "data": mark, "tenant": "acme"}):
            ("schema", "data: "),
        json.dumps({"type": "order.shipped", "data": {"marker": mark, "pad": "x" * MAX_BODY},
                    "tenant": "acme"}): ("too_large", "body: larger than the limit"),
    }
    values = [v.encode() for v in [good[0], *bad, good[1]]]
    produce_raw(settings, values, headers=[("trace", b"t-1")])

    rejected = read_topic(settings, topics.ingest_rejected,
                          until=lambda ms: sum(mark.encode() in m.value() for m in ms) >= len(bad))
    mine = [m for m in rejected if mark.encode() in m.value()]
    assert len(mine) == len(bad)
    sources = {(m.partition(), m.offset()): m.value()
               for m in read_topic(settings, topics.ingest, idle=1.0)}
    for message in mine:
        headers = headers_of(message)
        code, detail = bad[message.value().decode()]  # the original bytes, unchanged
        assert headers["rejection-code"] == code
        assert detail in headers["rejection-reason"]
        assert headers["source-topic"] == topics.ingest
        assert sources[(int(headers["source-partition"]), int(headers["source-offset"]))] \
            == message.value()
        assert headers["trace"] == "t-1" and message.key() == b"acme"

    read_topic(settings, topics.events,
               until=lambda ms: sum(mark.encode() in m.value() for m in ms) >= len(good))
    found = envelopes_on(settings, topics.events, until_id=f"evt_k{mark}", marker=mark)
    assert sorted((e["type"], e["tenant"], e.pop("_key")) for e in found) == [
        ("order.paid", "globex", b"globex"), ("order.shipped", "acme", b"acme")]
    for document in found:
        Envelope.from_dict(document)
    paid = next(e for e in found if e["type"] == "order.paid")
    assert paid["created"] == "2026-11-22T10:30:00.000000Z"


def test_intake_offsets_are_committed_after_processing(ingest: TestClient,
                                                       settings: Settings) -> None:
    topics = Topics.from_settings(settings)
    mark = uuid.uuid4().hex
    produce_raw(settings, [json.dumps({"type": "a.b", "data": {"marker": mark}, "tenant": "acme",
                                       "id": f"evt_o{mark}"}).encode()])
    envelopes_on(settings, topics.events, until_id=f"evt_o{mark}")
    probe = Consumer({**settings.kafka.client_config(),
                      "group.id": f"{settings.topic_prefix}.ingest-intake"})
    try:
        partitions = [TopicPartition(topics.ingest, n) for n in range(settings.topic_partitions)]
        ends = {tp.partition: probe.get_watermark_offsets(tp, timeout=10)[1] for tp in partitions}
        for _ in range(100):
            committed = {tp.partition: tp.offset for tp in probe.committed(partitions, timeout=10)}
            if all(committed[n] == ends[n] for n in ends if ends[n] > 0):
                break
            time.sleep(0.1)  # the commit follows the batch's acknowledgements shortly
        assert all(committed[n] == ends[n] for n in ends if ends[n] > 0), (committed, ends)
    finally:
        probe.close()


def test_repeated_ids_across_intake_and_http_are_appended_once(ingest: TestClient,
                                                               settings: Settings) -> None:
    topics = Topics.from_settings(settings)
    mark = uuid.uuid4().hex
    event = {"type": "order.dup", "data": {"marker": mark}, "tenant": "acme",
             "id": f"evt_d{mark}"}
    produce_raw(settings, [json.dumps(event).encode()] * 3)
    keyed = {"type": "order.keyed", "data": {"marker": mark}, "tenant": "acme"}
    produce_raw(settings, [json.dumps(keyed).encode()] * 2,
                headers=[("idempotency-key", f"ik-{mark}".encode())])
    envelopes_on(settings, topics.events, until_id=f"evt_d{mark}")
    http_repeat = ingest.post("/v1/events", json={k: v for k, v in event.items()
                                                   if k != "tenant"}, headers=ACME)
    assert http_repeat.status_code == 200

    last = ingest.post("/v1/events", json={"type": "order.last", "data": {"marker": mark}},
                       headers=ACME).json()["id"]
    found = envelopes_on(settings, topics.events, until_id=last, marker=mark)
    assert sorted(e["type"] for e in found) == ["order.dup", "order.keyed", "order.last"]


def test_publisher_sdk_events_arrive_as_published(ingest: TestClient, settings: Settings) -> None:
    topics = Topics.from_settings(settings)
    mark = uuid.uuid4().hex
    publisher = EventPublisher(settings, tenant="acme")
    try:
        envelope = publisher.publish("invoice.paid", {"marker": mark, "amount": 12})
        publisher.send(envelope)  # a retry of the same envelope is not appended again
        with pytest.raises(PublishError, match="type: must be lower-case"):
            publisher.publish("Invoice", {"marker": mark})
        with pytest.raises(PublishError, match="tenant: required"):
            EventPublisher(settings).publish("invoice.paid", {"marker": mark})
        with pytest.raises(PublishError, match="larger than the limit"):
            publisher.publish("invoice.paid", {"marker": mark, "pad": "x" * MAX_BODY})
    finally:
        publisher.close()
    last = ingest.post("/v1/events", json={"type": "invoice.last", "data": {"marker": mark}},
                       headers=ACME).json()["id"]
    envelopes_on(settings, topics.events, until_id=envelope.id)
    found = envelopes_on(settings, topics.events, until_id=last, marker=mark)
    assert [e for e in found if e["id"] == envelope.id] == [
        {**envelope.model_dump(), "_key": b"acme"}]
    assert len(found) == 2
