"""The ingest API under generated requests: real app, real Kafka."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.services.ingest.conftest import ACME
from tests.support.api_fuzz import fuzz_every_operation


def test_every_answer_is_documented_and_none_is_a_server_error(ingest: TestClient) -> None:
    checked = fuzz_every_operation(ingest, ACME)
    assert {"POST /v1/events", "POST /v1/events/batch"} <= set(checked)
