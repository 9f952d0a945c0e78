"""The ingest settings read from WEBHOOKS_* variables."""

from __future__ import annotations

import pytest

from webhooks.settings import Settings


def test_ingest_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBHOOKS_INGEST_PRODUCE_TIMEOUT", "2s")
    monkeypatch.setenv("WEBHOOKS_INGEST_MAX_BATCH_BYTES", "65536")
    monkeypatch.setenv("WEBHOOKS_INGEST_KAFKA_INTAKE", "false")
    settings = Settings()
    assert settings.ingest_produce_timeout == 2.0
    assert settings.ingest_max_batch_bytes == 65536
    assert settings.ingest_kafka_intake is False


def test_ingest_defaults() -> None:
    settings = Settings()
    assert (settings.ingest_produce_timeout, settings.ingest_kafka_intake) == (5.0, True)
    assert settings.ingest_max_batch_bytes == 5 * 1024 * 1024
