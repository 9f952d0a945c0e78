import pytest
from pydantic import ValidationError

from webhooks.retry_schedule import RetrySchedule
from webhooks.settings import Settings


def test_reads_prefixed_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBHOOKS_API_KEYS", "k1:acme, k2:*")
    monkeypatch.setenv("WEBHOOKS_DELIVERY_TIMEOUT", "2500ms")
    monkeypatch.setenv("WEBHOOKS_ALLOW_PRIVATE_TARGETS", "10.0.0.0/8,127.0.0.1")
    monkeypatch.setenv("WEBHOOKS_RETRY_SCHEDULE", "1s,2s,3s")
    settings = Settings()
    assert settings.api_keys == {"k1": "acme", "k2": "*"}
    assert settings.delivery_timeout == 2.5
    assert settings.allow_private_targets == ("10.0.0.0/8", "127.0.0.1")
    assert settings.retry_schedule == RetrySchedule.parse("1s,2s,3s")


def test_retry_schedule_is_parsed_once_with_the_jitter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WEBHOOKS_RETRY_SCHEDULE", raising=False)
    monkeypatch.delenv("WEBHOOKS_RETRY_JITTER", raising=False)
    settings = Settings(retry_schedule="1s,2s", retry_jitter=0.0)
    assert settings.retry_schedule == RetrySchedule(delays=(1.0, 2.0), jitter=0.0)
    assert Settings().retry_schedule == RetrySchedule.parse("1m,5m,30m,2h,8h,24h", jitter=0.1)
    # Written back as it is read, e.g. into a child process's environment.
    assert settings.model_dump()["retry_schedule"] == "1s,2s"


def test_allow_private_true_means_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBHOOKS_ALLOW_PRIVATE_TARGETS", "true")
    assert Settings().allow_private_targets == ("0.0.0.0/0", "::/0")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("WEBHOOKS_API_KEYS", "no-tenant-here"),
        ("WEBHOOKS_RETRY_SCHEDULE", "1m,soon"),
        ("WEBHOOKS_RETRY_SCHEDULE", "1m,,5m"),
        ("WEBHOOKS_ALLOW_PRIVATE_TARGETS", "10.0.0.0/33"),
        ("WEBHOOKS_DELIVERY_TIMEOUT", "-1s"),
        ("WEBHOOKS_KAFKA_LINGER_MS", "-1"),
    ],
)
def test_bad_values_are_refused(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        Settings()


def test_every_producer_gets_the_one_linger_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    # Ingest, fanout, the event log API and the publisher SDK all build their producer
    # from settings.kafka.
    monkeypatch.setenv("WEBHOOKS_KAFKA_LINGER_MS", "0")
    assert Settings().kafka.linger_ms == 0.0
    monkeypatch.delenv("WEBHOOKS_KAFKA_LINGER_MS")
    assert Settings().kafka.linger_ms == 1.0


def test_kafka_sasl_config() -> None:
    settings = Settings(kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="SCRAM-SHA-512",
                        kafka_sasl_username="u", kafka_sasl_password="p")
    config = settings.kafka.client_config()
    assert config["security.protocol"] == "SASL_SSL"
    assert config["sasl.mechanism"] == "SCRAM-SHA-512"
    assert config["sasl.username"] == "u"
