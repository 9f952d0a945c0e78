"""Session-wide real infrastructure: one Kafka broker, one ClickHouse engine.

Each test module gets its own topic prefix and ClickHouse database, so modules share
the broker and the engine without seeing each other's data.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trustme

from tests.support.backends import docker_available, with_database
from tests.support.receiver import Receiver
from webhooks.secret_encryption import SecretsKeyring
from webhooks.settings import Settings
from webhooks.topics import ensure_topics

TEST_API_KEYS = {"key-acme": "acme", "key-globex": "globex", "key-admin": "*"}
# Every test stack seals endpoint secrets, so the whole suite runs encrypted. Two keys: the
# first seals; the second ("t0") only opens, as during a key rotation.
TEST_SECRETS_KEY = SecretsKeyring([("t1", bytes(range(32))), ("t0", bytes(range(32, 64)))])


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Kafka broker for the whole session."""
    if os.environ.get("WEBHOOKS_KAFKA_BOOTSTRAP"):
        yield os.environ["WEBHOOKS_KAFKA_BOOTSTRAP"]
    elif docker_available():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as kafka:
            yield kafka.get_bootstrap_server()
    else:
        from services.localdev.kafka_broker import LocalKafka, free_port

        broker = LocalKafka(tmp_path_factory.mktemp("kafka"), port=free_port())
        broker.start()
        try:
            yield broker.bootstrap
        finally:
            # Its data is thrown away: a clean shutdown of a broker holding every test's
            # topics took ~25 s of the suite's time.
            broker.stop(timeout=2.0)


@pytest.fixture(scope="session")
def clickhouse_base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ClickHouse engine for the whole session (embedded unless told otherwise)."""
    if os.environ.get("WEBHOOKS_CLICKHOUSE_URL"):
        yield os.environ["WEBHOOKS_CLICKHOUSE_URL"]
    elif docker_available():
        from testcontainers.clickhouse import ClickHouseContainer

        with ClickHouseContainer() as clickhouse:
            host = clickhouse.get_container_host_ip()
            port = clickhouse.get_exposed_port(8123)
            yield f"http://{clickhouse.username}:{clickhouse.password}@{host}:{port}/default"
    else:
        path: Path = tmp_path_factory.mktemp("clickhouse")
        yield f"chdb://{path}"


@pytest.fixture(scope="module")
def make_settings(kafka_bootstrap: str, clickhouse_base_url: str,
                  tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Settings]:
    """Build Settings for this module's private topics, database and ingest index
    directory, with overrides."""
    scope = f"t{uuid.uuid4().hex[:10]}"
    defaults = {
        "idempotency_dir": tmp_path_factory.mktemp("idempotency"),
        "kafka_bootstrap": kafka_bootstrap,
        "clickhouse_url": with_database(clickhouse_base_url, scope),
        "topic_prefix": scope,
        "topic_partitions": 3,
        "retry_schedule": "1s,2s,3s",
        "retry_jitter": 0.0,
        "api_keys": TEST_API_KEYS,
        "secrets_key": TEST_SECRETS_KEY,
        "allow_private_targets": ("127.0.0.0/8",),
        "delivery_timeout": 5.0,
    }

    def build(**overrides: object) -> Settings:
        return Settings(**{**defaults, **overrides})

    return build


@pytest.fixture(scope="module")
def settings(make_settings: Callable[..., Settings]) -> Settings:
    """This module's settings, with every topic created."""
    module_settings = make_settings()
    ensure_topics(module_settings)
    return module_settings


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    """A real HTTP receiver on loopback that records every webhook it gets."""
    server = Receiver().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def receivers_ca() -> trustme.CA:
    """A private CA of TLS receivers (certificates minted in the test)."""
    return trustme.CA()


@pytest.fixture(scope="session")
def clients_ca() -> trustme.CA:
    """The CA whose client certificates a mutual-TLS receiver accepts."""
    return trustme.CA()
