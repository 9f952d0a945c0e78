"""``/livez`` (the process serves) and ``/healthz`` (its dependencies answer) of the shared
health router, with real Kafka checks: one against the session broker, one against a
port where nothing listens."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient

from services.localdev.kafka_broker import free_port
from webhooks.kafka import KafkaConnection, kafka_reachable
from webhooks.observability import health_router


def client_with_kafka_check(bootstrap: str) -> TestClient:
    """An app whose readiness depends on the Kafka cluster at ``bootstrap`` only."""
    connection = KafkaConnection(bootstrap=bootstrap)
    app = FastAPI()
    app.include_router(health_router({"kafka": lambda: kafka_reachable(connection, timeout=1.0)}))
    return TestClient(app)


def test_livez_answers_while_healthz_reports_an_unreachable_kafka() -> None:
    with client_with_kafka_check(f"127.0.0.1:{free_port()}") as client:
        alive = client.get("/livez")
        ready = client.get("/healthz")
    assert (alive.status_code, alive.json()) == (200, {"status": "alive"})
    assert ready.status_code == 503
    assert ready.json() == {"status": "unavailable", "checks": {"kafka": "failing"}}


def test_both_answer_200_with_kafka_reachable(kafka_bootstrap: str) -> None:
    with client_with_kafka_check(kafka_bootstrap) as client:
        assert client.get("/livez").status_code == 200
        ready = client.get("/healthz")
    assert (ready.status_code, ready.json()) == (200, {"status": "ok",
                                                       "checks": {"kafka": "ok"}})
