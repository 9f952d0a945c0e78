import pytest
from pydantic import ValidationError

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
    assert settings.retry_schedule == "1s,2s,3s"


def test_allow_private_true_means_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBHOOKS_ALLOW_PRIVATE_TARGETS", "true")
    assert Settings().allow_private_targets == ("0.0.0.0/0", "::/0")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("WEBHOOKS_API_KEYS", "no-tenant-here"),
        ("WEBHOOKS_RETRY_SCHEDULE", "1m,soon"),
        ("WEBHOOKS_ALLOW_PRIVATE_TARGETS", "10.0.0.0/33"),
        ("WEBHOOKS_DELIVERY_TIMEOUT", "-1s"),
    ],
)
def test_bad_values_are_refused(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        Settings()


def test_kafka_sasl_config() -> None:
    settings = Settings(kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="SCRAM-SHA-512",
                        kafka_sasl_username="u", kafka_sasl_password="p")
    config = settings.kafka_client_config()
    assert config["security.protocol"] == "SASL_SSL"
    assert config["sasl.mechanism"] == "SCRAM-SHA-512"
    assert config["sasl.username"] == "u"
