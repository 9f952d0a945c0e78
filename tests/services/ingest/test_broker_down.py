"""With Kafka down, POST /v1/events answers 503 (after a bounded wait), never 202."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path

from services.localdev.kafka_broker import LocalKafka, free_port
from tests.services.ingest.conftest import ACME, running_ingest
from tests.support.kafka import read_topic
from webhooks.settings import Settings
from webhooks.topics import Topics, ensure_topics


def test_unreachable_broker_from_the_start_gives_503(
        make_settings: Callable[..., Settings]) -> None:
    nowhere = make_settings(kafka_bootstrap=f"127.0.0.1:{free_port()}",
                            ingest_produce_timeout=1.0, ingest_kafka_intake=False)
    with running_ingest(nowhere, ledger_startup_wait=1.0) as ingest:
        response = ingest.post("/v1/events", json={"type": "a.b", "data": {}}, headers=ACME)
        assert response.status_code == 503
        assert response.headers["content-type"] == "application/problem+json"
        assert "Kafka" in response.json()["detail"]
        assert ingest.get("/healthz").status_code == 503


def test_broker_stopping_mid_flight_gives_503_appends_nothing_and_recovers(
        make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    broker = LocalKafka(tmp_path / "kafka", port=free_port())
    broker.start()
    try:
        settings = make_settings(kafka_bootstrap=broker.bootstrap, topic_partitions=1,
                                 ingest_produce_timeout=2.0)
        ensure_topics(settings)
        mark = uuid.uuid4().hex
        with running_ingest(settings) as ingest:
            accepted = ingest.post("/v1/events", json={"type": "a.b", "data": {"marker": mark}},
                                   headers=ACME)
            assert accepted.status_code == 202
            broker.stop()
            for body in ({"type": "a.c", "data": {"marker": mark}},
                         {"type": "a.d", "data": {"marker": mark}, "id": f"evt_x{mark}"}):
                refused = ingest.post("/v1/events", json=body, headers=ACME)
                assert refused.status_code == 503, refused.text
                assert refused.json()["code"] == "unavailable"

            broker.start()  # the same replica recovers once Kafka is back
            body = {"type": "a.e", "data": {"marker": mark}, "id": f"evt_y{mark}"}
            statuses = []
            for _ in range(30):
                statuses.append(ingest.post("/v1/events", json=body, headers=ACME).status_code)
                if statuses[-1] == 202:
                    break
            assert statuses[-1] == 202 and set(statuses) <= {202, 409, 503}, statuses

        events = read_topic(settings, Topics.from_settings(settings).events, idle=2.0)
        mine = [json.loads(m.value()) for m in events if mark.encode() in m.value()]
        assert [e["type"] for e in mine] == ["a.b", "a.e"]
        assert mine[0] == accepted.json()
    finally:
        broker.stop()
