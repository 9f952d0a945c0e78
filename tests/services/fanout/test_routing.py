"""Matching and signing end to end: real broker, real worker process, real receivers."""

from __future__ import annotations

import time
from datetime import timedelta

from confluent_kafka import Consumer, Message, TopicPartition
from standardwebhooks.webhooks import Webhook

from services.fanout.fetch_tuning import FETCH_WAIT_MS
from services.localdev.service_process import ServiceProcess
from tests.services.fanout.harness import Platform, partition_of
from tests.support.kafka import read_topic
from tests.support.receiver import Receiver
from webhooks.acked_producer import AckedProducer
from webhooks.delivery import AttemptRecord, DeliveryTask
from webhooks.endpoints import EndpointSecret, new_endpoint_id
from webhooks.envelope import Envelope, utcnow
from webhooks.settings import Settings
from webhooks.signing import generate_secret


def test_filters_route_each_event_to_exactly_the_matching_endpoints(
        worker: ServiceProcess, platform: Platform, receiver: Receiver,
        settings: Settings) -> None:
    exact = platform.endpoint(receiver.url("/exact"), ["order.shipped"])
    prefix = platform.endpoint(receiver.url("/prefix"), ["order.*"])
    everything = platform.endpoint(receiver.url("/all"), ["*"])
    platform.endpoint(receiver.url("/other-tenant"), ["*"], tenant="globex")
    platform.endpoint(receiver.url("/disabled"), ["*"], disabled=True,
                      disabled_reason="test")
    platform.endpoint(receiver.url("/invoices"), ["invoice.paid"])
    time.sleep(2)  # the view picks changes up within seconds

    shipped = platform.event("order.shipped", id="order_1")
    created = platform.event("order.created", id="order_2")
    customer = platform.event("customer.updated", id="cus_1")

    assert {r.event_id for r in receiver.wait_for("/all", 3)} == {
        shipped.id, created.id, customer.id}
    assert {r.event_id for r in receiver.wait_for("/prefix", 2)} == {shipped.id, created.id}
    assert [r.event_id for r in receiver.wait_for("/exact", 1)] == [shipped.id]
    time.sleep(1.5)  # give any wrong delivery time to show up
    assert len(receiver.at("/all")) == 3
    assert len(receiver.at("/prefix")) == 2
    assert len(receiver.at("/exact")) == 1
    assert receiver.at("/other-tenant") == []
    assert receiver.at("/disabled") == []
    assert receiver.at("/invoices") == []

    request = receiver.at("/exact")[0]
    assert request.body == shipped.to_json()
    assert request.headers["webhook-id"] == shipped.id
    assert request.headers["webhook-attempt"] == "1"
    assert request.headers["webhook-event-type"] == "order.shipped"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"].startswith("kafka-webhooks/")
    # Verified by the published library with the endpoint's secret.
    assert Webhook(exact.secrets[0].secret).verify(request.body, request.headers) == \
        shipped.model_dump()

    attempts = [AttemptRecord.from_json(m.value()) for m in read_topic(
        settings, platform.topics.attempts,
        until=lambda ms: len(ms) >= 6)]
    ours = [a for a in attempts if a.endpoint_id in (exact.id, prefix.id, everything.id)]
    assert len(ours) == 6
    assert all(a.status == "succeeded" and a.outcome == "delivered"
               and a.response_status == 200 for a in ours)


def test_both_signatures_verify_during_a_secret_rotation(
        worker: ServiceProcess, platform: Platform, receiver: Receiver,
        settings: Settings) -> None:
    old, new = generate_secret(), generate_secret()
    expires = utcnow() + timedelta(hours=1)
    endpoint = platform.endpoint(
        receiver.url("/rotating"), ["*"],
        secrets=[EndpointSecret(secret=new), EndpointSecret(secret=old, expires=expires)])
    expired = generate_secret()
    rotated = platform.endpoint(receiver.url("/rotated-long-ago"), ["*"], secrets=[
        EndpointSecret(secret=new),
        EndpointSecret(secret=expired, expires=utcnow() - timedelta(hours=1))])
    time.sleep(2)

    event = platform.event("order.paid", id="order_9")
    request = receiver.wait_for("/rotating", 1)[0]
    assert len(request.headers["webhook-signature"].split()) == 2
    # A receiver still on the old secret and one already on the new one both accept it.
    assert Webhook(old).verify(request.body, request.headers)["id"] == event.id
    assert Webhook(new).verify(request.body, request.headers)["id"] == event.id

    late = receiver.wait_for("/rotated-long-ago", 1)[0]
    assert len(late.headers["webhook-signature"].split()) == 1
    assert Webhook(new).verify(late.body, late.headers)["id"] == event.id

    # A fresh task is written to Kafka only if its first attempt fails; every attempt
    # record is keyed by its endpoint id, so an endpoint's records share a partition.
    ours = (endpoint.id, rotated.id)

    def attempts(messages: list) -> list[tuple[AttemptRecord, Message]]:  # type: ignore[type-arg]
        decoded = ((AttemptRecord.from_json(m.value()), m) for m in messages)
        return [(a, m) for a, m in decoded if a.event_id == event.id and a.endpoint_id in ours]

    keyed = attempts(read_topic(settings, platform.topics.attempts,
                                until=lambda ms: len(attempts(ms)) == 2))
    assert sorted(a.endpoint_id for a, _ in keyed) == sorted(ours)
    for attempt, message in keyed:
        assert message.key() == attempt.endpoint_id.encode()
        assert message.partition() == partition_of(attempt.endpoint_id, settings.topic_partitions)
    fresh = [DeliveryTask.from_json(m.value()) for m in read_topic(
        settings, platform.topics.deliveries, idle=1.0)]
    assert [t for t in fresh if t.event.id == event.id] == []


def test_endpoint_changes_reach_matching_within_seconds(
        worker: ServiceProcess, platform: Platform, receiver: Receiver) -> None:
    endpoint = platform.endpoint(receiver.url("/changing"), ["order.shipped"])
    time.sleep(2)
    first = platform.event("order.shipped", id="o1")
    receiver.wait_for("/changing", 1)

    platform.put_endpoint(endpoint.model_copy(update={"events": ["invoice.*"]}))
    time.sleep(2)
    platform.event("order.shipped", id="o2")
    invoice = platform.event("invoice.paid", id="in1")
    assert [r.event_id for r in receiver.wait_for("/changing", 2)] == [first.id, invoice.id]

    platform.delete_endpoint(endpoint.id)
    time.sleep(2)
    platform.event("invoice.paid", id="in2")
    time.sleep(3)
    assert len(receiver.at("/changing")) == 2


def test_offsets_are_committed_once_outcomes_are_durable(
        worker: ServiceProcess, platform: Platform, receiver: Receiver,
        settings: Settings) -> None:
    platform.endpoint(receiver.url("/committed"), ["*"], tenant="commitco")
    time.sleep(2)
    platform.event("order.created", tenant="commitco", id="c1")
    receiver.wait_for("/committed", 1)

    # The worker's group, read without joining it: committed() only asks the coordinator.
    def lag() -> dict[str, int]:
        consumer = Consumer({**settings.kafka.client_config(),
                             "group.id": f"{settings.topic_prefix}-fanout"})
        try:
            behind: dict[str, int] = {}
            for topic in (platform.topics.events, platform.topics.deliveries):
                partitions = [TopicPartition(topic, p) for p in range(settings.topic_partitions)]
                for tp in consumer.committed(partitions, timeout=10):
                    high = consumer.get_watermark_offsets(tp, timeout=10)[1]
                    behind[topic] = behind.get(topic, 0) + high - max(tp.offset, 0)
            return behind
        finally:
            consumer.close()

    deadline = time.monotonic() + 30
    while (behind := lag()) and any(behind.values()) and time.monotonic() < deadline:
        time.sleep(1)
    assert behind == {platform.topics.events: 0, platform.topics.deliveries: 0}


def test_tasks_from_the_eventlog_api_are_delivered_or_dropped_with_a_record(
        worker: ServiceProcess, platform: Platform, receiver: Receiver,
        settings: Settings) -> None:
    # The eventlog API produces test / redeliver tasks straight to the deliveries topic;
    # they go to the named endpoint whatever its filters say.
    endpoint = platform.endpoint(receiver.url("/api-tasks"), ["invoice.paid"], tenant="apico")
    time.sleep(2)
    event = Envelope.create(type="webhook.test", tenant="apico", data={"object": {}},
                            api_version=settings.api_version)
    sent = DeliveryTask.create(event, endpoint.id, trigger="test")
    missing = DeliveryTask.create(event, new_endpoint_id(), trigger="redeliver")
    producer = AckedProducer(settings.kafka)
    for task in (sent, missing):
        producer.send(platform.topics.deliveries, task.to_json(), key=task.key)

    request = receiver.wait_for("/api-tasks", 1)[0]
    assert request.event_id == event.id and request.headers["webhook-event-type"] == "webhook.test"

    def ours(messages: list) -> dict[str, AttemptRecord]:  # type: ignore[type-arg]
        records = [AttemptRecord.from_json(m.value()) for m in messages]
        return {r.task_id: r for r in records if r.task_id in (sent.task_id, missing.task_id)}

    records = ours(read_topic(settings, platform.topics.attempts,
                              until=lambda ms: len(ours(ms)) == 2))
    assert records[sent.task_id].trigger == "test"
    assert records[sent.task_id].outcome == "delivered"
    dropped = records[missing.task_id]
    assert (dropped.outcome, dropped.error, dropped.trigger) == (
        "dropped", "endpoint_missing", "redeliver")

    metrics = worker.metrics()
    assert 'webhooks_deliveries_total{outcome="delivered"}' in metrics
    assert 'webhooks_deliveries_total{outcome="dropped"} 1.0' in metrics
    assert f'webhooks_consumer_lag{{partition="0",topic="{platform.topics.events}"}}' in metrics


def test_the_workers_fetch_wait_is_bounded(worker: ServiceProcess, platform: Platform,
                                           receiver: Receiver) -> None:
    # Faust fixes aiokafka's fetch wait at 1.5 s, which stalled events behind idle retry
    # tiers under load; the worker lowers it once partitions are assigned (FETCH_WAIT_MS).
    platform.endpoint(receiver.url("/fetch-wait"), ["*"], tenant="fetchco")
    time.sleep(2)
    platform.event("order.created", tenant="fetchco")
    receiver.wait_for("/fetch-wait", 1)  # partitions assigned and consumed
    log = worker.log_tail(10_000_000)
    assert f"consumer fetch wait bounded to {FETCH_WAIT_MS} ms" in log
    assert "cannot bound the consumer's fetch wait" not in log
    # ... and it names the retry tiers in fewer fetches (services/fanout/fetch_tuning.py).
    assert "retry tiers are fetched every 0.10 s at most" in log
    assert "cannot pace the retry tiers' fetches" not in log
