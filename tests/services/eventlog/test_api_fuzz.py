"""The eventlog API under generated requests: real app, real Kafka, embedded ClickHouse."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.services.eventlog.conftest import ACME
from tests.support.api_fuzz import fuzz_every_operation


def test_every_answer_is_documented_and_none_is_a_server_error(api: TestClient) -> None:
    checked = fuzz_every_operation(api, ACME)
    assert {"GET /v1/events", "POST /v1/endpoints", "POST /v1/endpoints/{endpoint_id}/recover",
            "GET /v1/endpoints/{endpoint_id}/attempts", "GET /v1/dlq", "GET /v1/dlq/{task_id}",
            "POST /v1/dlq/replay"} <= set(checked)
