"""The endpoints view against the real broker's compacted topic."""

from __future__ import annotations

import json
import logging
import time

import pytest

from services.fanout.endpoint_view import EndpointView
from tests.support.records import endpoint, event
from webhooks.acked_producer import AckedProducer
from webhooks.settings import Settings
from webhooks.topics import Topics


def eventually(check, timeout: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def test_view_rebuilds_from_the_topic_follows_changes_and_deletes(settings: Settings) -> None:
    topic = Topics.from_settings(settings).endpoints
    producer = AckedProducer(settings.kafka)
    orders = endpoint("acme", ["order.*"])
    everything = endpoint("acme", ["*"])
    other = endpoint("globex", ["*"])
    for record in (orders, everything, other):
        producer.send(topic, record.to_json(), key=record.id.encode())
    producer.send(topic, b"{not json", key=b"ep_broken")

    view = EndpointView(settings.kafka, topic)
    view.start()
    try:
        # Ready means caught up: everything written before the start is there.
        assert view.wait_ready(30)
        assert {e.id for e in view.matching(event("order.paid"))} == {orders.id, everything.id}
        assert {e.id for e in view.matching(event("order.paid", "globex"))} == {other.id}
        assert view.get("ep_broken") is None

        disabled = everything.model_copy(update={"disabled": True})
        producer.send(topic, disabled.to_json(), key=everything.id.encode())
        producer.send(topic, None, key=orders.id.encode())  # tombstone
        eventually(lambda: view.get(orders.id) is None
                   and (current := view.get(everything.id)) is not None and current.disabled)
        assert view.matching(event("order.paid")) == []
    finally:
        view.stop()

    # A restart rebuilds the same state from the compacted topic.
    again = EndpointView(settings.kafka, topic)
    again.start()
    try:
        assert again.wait_ready(30)
        assert again.get(orders.id) is None
        assert again.get(everything.id) is not None and again.get(everything.id).disabled
        assert len(again) == 2
    finally:
        again.stop()


def test_an_empty_topic_is_ready_at_once(make_settings) -> None:  # type: ignore[no-untyped-def]
    from webhooks.topics import ensure_topics

    fresh = make_settings(topic_prefix=f"{make_settings().topic_prefix}e")
    ensure_topics(fresh)
    view = EndpointView(fresh.kafka, Topics.from_settings(fresh).endpoints)
    view.start()
    try:
        assert view.wait_ready(30) and len(view) == 0
    finally:
        view.stop()


def test_an_invalid_record_is_skipped_and_logged_without_its_values(
        settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    view = EndpointView(settings.kafka, Topics.from_settings(settings).endpoints)  # apply() only
    record = endpoint("acme", ["*"]).model_dump()
    record["secrets"] = [{"secret": "whsec_l3aked-secret!"}]  # fails the schema's pattern

    with caplog.at_level(logging.DEBUG, logger="services.fanout.endpoint_view"):
        view.apply(record["id"], json.dumps(record).encode())
        view.apply("ep_garbled", b'{"secrets": [{"secret": "whsec_l3aked')

    assert view.get(record["id"]) is None and len(view) == 0
    invalid, garbled = (r.getMessage() for r in caplog.records)
    assert record["id"] in invalid and "secrets.0.secret" in invalid
    assert "ep_garbled" in garbled
    # Neither the message nor a traceback repeats what the record held.
    assert "l3aked" not in caplog.text
    assert all(r.exc_info is None for r in caplog.records)
