"""The compacted-topic follower against the real broker: ready, catch-up, holes, restarts."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import NewTopic

from tests.support.eventlog import eventually
from webhooks.acked_producer import AckedProducer
from webhooks.compacted_topic import CompactedTopicFollower
from webhooks.kafka import (
    KafkaConnection,
    create_admin,
    create_consumer,
    create_producer,
    end_offsets,
)
from webhooks.settings import Settings


class Recording(CompactedTopicFollower):
    """Keeps the latest value per key; fails once on the record keyed ``fail_on``."""

    thread_name = "test-follower"
    stop_timeout = 5.0

    def __init__(self, connection: KafkaConnection, topic: str,
                 fail_on: bytes | None = None) -> None:
        super().__init__(connection, topic)
        self.values: dict[bytes | None, bytes | None] = {}
        self.resets: list[int] = []
        self.fail_on = fail_on

    def reset(self, partitions: int) -> None:
        self.values = {}
        self.resets.append(partitions)

    def apply_record(self, key: bytes | None, value: bytes | None, timestamp_ms: int) -> None:
        if key is not None and key == self.fail_on:
            self.fail_on = None
            raise ValueError("unreadable record")
        assert key not in self.values, "a record applied twice without a reset"
        self.values[key] = value


class Restarting(Recording):
    restart_pause = 0.1


@pytest.fixture(scope="module")
def connection(make_settings: Callable[..., Settings]) -> KafkaConnection:
    return make_settings().kafka


def create_topic(connection: KafkaConnection, name: str, partitions: int,
                 cleanup: str = "compact") -> None:
    admin = create_admin(connection)  # kept until the result: a collected client cancels it
    futures = admin.create_topics(
        [NewTopic(name, partitions, 1, config={"cleanup.policy": cleanup})])
    futures[name].result(30)


def new_topic(connection: KafkaConnection, partitions: int = 2, cleanup: str = "compact") -> str:
    name = f"{connection.topic_prefix}.follow-{uuid.uuid4().hex[:8]}"
    create_topic(connection, name, partitions, cleanup)
    return name


def write(connection: KafkaConnection, topic: str, keys: list[bytes]) -> None:
    producer = AckedProducer(connection)
    try:
        producer.produce_all(topic, ((key, b"v-" + key) for key in keys))
    finally:
        producer.close()


def test_an_empty_topic_is_ready_at_once(connection: KafkaConnection) -> None:
    follower = Recording(connection, new_topic(connection)).start()
    try:
        assert follower.wait_ready(30) and follower.values == {}
        assert follower.resets == [2]
        assert follower.catch_up(10)
    finally:
        follower.stop()


def test_ready_means_applied_up_to_the_start_and_catch_up_up_to_the_call(
        connection: KafkaConnection) -> None:
    topic = new_topic(connection)
    before = [f"k{n}".encode() for n in range(20)]
    write(connection, topic, before)
    follower = Recording(connection, topic).start()
    try:
        assert follower.wait_ready(30)
        assert set(follower.values) == set(before)

        after = [f"late{n}".encode() for n in range(10)]
        write(connection, topic, after)
        assert follower.catch_up(20)
        assert set(follower.values) == {*before, *after}  # no waiting beyond catch_up
    finally:
        follower.stop()


def test_control_records_and_aborted_writes_at_the_end_do_not_hold_it_back(
        connection: KafkaConnection) -> None:
    # Offsets: 2 committed records, a commit marker, 2 aborted records, an abort marker.
    # poll() returns only the first two, so "read up to the end" rests on the position.
    topic = new_topic(connection, partitions=1)
    producer = create_producer(connection, **{"transactional.id": uuid.uuid4().hex})
    producer.init_transactions(30)

    def transaction(keys: list[bytes], commit: bool) -> None:
        producer.begin_transaction()
        for key in keys:
            producer.produce(topic, b"v", key=key)
        if commit:
            producer.commit_transaction(30)
        else:
            producer.abort_transaction(30)

    transaction([b"kept1", b"kept2"], commit=True)
    transaction([b"aborted1", b"aborted2"], commit=False)
    # A transaction's end returns before the broker wrote its markers; until then the end
    # a read-committed consumer sees (the last stable offset) stays before the kept
    # records, and a follower started then is rightly ready at once, having read nothing.
    consumer = create_consumer(connection, f"check-{uuid.uuid4().hex}")
    try:
        eventually(lambda: end_offsets(consumer, topic)[0] >= 3)
    finally:
        consumer.close()
    follower = Recording(connection, topic).start()
    try:
        assert follower.wait_ready(30)
        assert set(follower.values) == {b"kept1", b"kept2"}
        transaction([b"aborted3"], commit=False)
        assert follower.catch_up(20)
        assert set(follower.values) == {b"kept1", b"kept2"}
    finally:
        follower.stop()
        producer.close()


def test_records_deleted_before_the_start_are_not_waited_for(
        connection: KafkaConnection) -> None:
    # As the idempotency topic: compacted, and records older than the retention deleted.
    topic = new_topic(connection, partitions=1, cleanup="compact,delete")
    write(connection, topic, [b"a", b"b", b"c"])
    admin = create_admin(connection)
    for future in admin.delete_records([TopicPartition(topic, 0, 3)]).values():
        future.result(30)  # low watermark = high watermark = 3: nothing left to read
    follower = Recording(connection, topic).start()
    try:
        assert follower.wait_ready(30) and follower.values == {}
        assert follower.catch_up(10)
    finally:
        follower.stop()


def test_a_missing_topic_is_waited_for(connection: KafkaConnection) -> None:
    topic = f"{connection.topic_prefix}.later-{uuid.uuid4().hex[:8]}"
    follower = Recording(connection, topic).start()
    try:
        assert not follower.wait_ready(1.0)
        create_topic(connection, topic, 2)
        write(connection, topic, [b"first"])
        assert follower.wait_ready(30)
        assert follower.catch_up(20) and set(follower.values) == {b"first"}
    finally:
        follower.stop()


def test_a_failure_starts_over_from_an_empty_state_with_a_restart_pause(
        connection: KafkaConnection) -> None:
    topic = new_topic(connection, partitions=1)
    keys = [b"a", b"bad", b"c"]
    write(connection, topic, keys)
    follower = Restarting(connection, topic, fail_on=b"bad").start()
    try:
        assert follower.wait_ready(30)
        assert set(follower.values) == set(keys)  # every record once, after the reset
        assert follower.resets == [1, 1] and follower.failure is None
    finally:
        follower.stop()


def test_a_failure_without_a_restart_pause_is_raised_by_wait_ready(
        connection: KafkaConnection) -> None:
    topic = new_topic(connection, partitions=1)
    write(connection, topic, [b"bad"])
    follower = Recording(connection, topic, fail_on=b"bad").start()
    try:
        with pytest.raises(RuntimeError, match="test-follower failed"):
            follower.wait_ready(30)
        assert isinstance(follower.failure, ValueError) and not follower.catch_up(1)
    finally:
        follower.stop()
