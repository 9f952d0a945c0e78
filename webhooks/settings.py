"""Typed settings, read once from ``WEBHOOKS_*`` environment variables.

Nothing reads the environment at import time: services call :func:`get_settings`
(cached) or build a :class:`Settings` explicitly, which is what tests do.
"""

from __future__ import annotations

import ipaddress
from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import Field, PlainSerializer, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from webhooks.delivery_proxy import DeliveryProxy
from webhooks.durations import parse_duration
from webhooks.kafka import KafkaConnection
from webhooks.retry_schedule import RetrySchedule
from webhooks.secret_encryption import SecretsKeyring

ADMIN_TENANT = "*"


class Settings(BaseSettings):
    """Every knob of the platform; see docs/operators/configuration.md."""

    # A refused value is never quoted back: API keys, passwords and the secrets key are
    # among them.
    model_config = SettingsConfigDict(env_prefix="WEBHOOKS_", extra="ignore",
                                      hide_input_in_errors=True)

    # Where and how we run.
    environment: Literal["local", "production"] = "local"
    host: str = "127.0.0.1"
    ingest_port: int = 8081
    eventlog_port: int = 8082
    fanout_port: int = 8083
    log_level: str = "INFO"
    # text: one readable line per record; json: one JSON object per line (log shippers).
    log_format: Literal["text", "json"] = "text"
    # On SIGTERM, how long ingest and the eventlog keep serving while /healthz answers 503
    # (load balancers take them out meanwhile), before they stop listening and finish the
    # requests in flight.
    shutdown_delay: Annotated[float, NoDecode] = 0.0

    # Kafka.
    kafka_bootstrap: str = "127.0.0.1:9092"
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: str | None = None
    kafka_ssl_ca_location: str | None = None
    # How long every producer waits to fill a batch (ms). 1 keeps a lightly loaded path
    # fast and under load batches fill while earlier ones are in flight anyway; 0 sends
    # at once (librdkafka's timer makes any other wait ~1.5 ms at light load) for ~1.3 ms
    # less per Kafka hop, at more broker requests (and broker CPU) per event under load.
    kafka_linger_ms: float = Field(default=1.0, ge=0.0, le=1000.0)
    topic_prefix: str = "webhooks"
    # The most fanout workers (and sink and intake consumers) that can share the work;
    # 12 costs one worker ~5 % more CPU per delivery than 6 at light load and divides
    # evenly over 1, 2, 3, 4, 6 and 12 workers (docs/benchmarks/scaling.md).
    topic_partitions: int = Field(default=12, ge=1)
    topic_replication: int = Field(default=1, ge=1)
    # Replicas that must have a record before a write is acknowledged (every producer
    # writes with acks=all): min.insync.replicas of the platform's topics, capped at
    # their replication factor. 2 of 3 replicas: one broker may be down, and a record
    # acknowledged is on two brokers.
    topic_min_insync_replicas: int = Field(default=2, ge=1)

    # ClickHouse: chdb:///path (embedded) or http(s)://user:pass@host:8123/db.
    clickhouse_url: str = "chdb://.data/clickhouse"
    retention_days: int = Field(default=30, ge=1)
    # all: sink and API in one process (required with chdb); api / sink: split (server mode).
    eventlog_role: Literal["all", "api", "sink"] = "all"
    # Eventlog: MAC key of pagination cursors (default: derived from api_keys); sink batches.
    cursor_secret: str = ""
    sink_batch_size: int = Field(default=5000, ge=1)
    sink_batch_wait: float = Field(default=0.25, gt=0)  # seconds

    # Auth: "key:tenant,key2:*" where "*" marks an admin key.
    api_keys: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    # Seals endpoint signing secrets at rest: "kid:base64(32 bytes)[,kid:…]", the first
    # key seals, all open. Fanout and the eventlog API refuse to start without it.
    secrets_key: Annotated[SecretsKeyring | None, NoDecode] = None

    # Ingest.
    max_body_bytes: int = Field(default=256 * 1024, ge=1024)
    idempotency_window: Annotated[float, NoDecode] = 24 * 3600.0
    # Ingest's on-disk idempotency index: each worker process takes its own subdirectory,
    # kept across restarts (a restart reads only the ledger records written since).
    idempotency_dir: Path = Path(".data/idempotency")
    api_version: str = "2026-11-01"
    ingest_max_batch_bytes: int = Field(default=5 * 1024 * 1024, ge=1024)
    ingest_produce_timeout: Annotated[float, NoDecode] = 5.0
    ingest_kafka_intake: bool = True
    # uvicorn worker processes of `webhooks serve ingest`; each is a replica of its own.
    ingest_workers: int = Field(default=1, ge=1)

    # Delivery.
    # Read as "1m,5m,30m,…" (one retry tier per delay); written back the same way.
    retry_schedule: Annotated[RetrySchedule, NoDecode, PlainSerializer(str, return_type=str)] = (
        RetrySchedule.parse("1m,5m,30m,2h,8h,24h"))
    retry_jitter: float = Field(default=0.1, ge=0.0, le=1.0)
    delivery_timeout: Annotated[float, NoDecode] = 15.0
    delivery_concurrency: int = Field(default=200, ge=1)
    endpoint_max_in_flight: int = Field(default=10, ge=1)
    # Due deliveries queued in memory per endpoint; more are deferred to a retry tier topic.
    endpoint_max_queued: int = Field(default=1000, ge=1)
    secret_rotation_overlap: Annotated[float, NoDecode] = 24 * 3600.0
    disable_after: Annotated[float, NoDecode] = 5 * 24 * 3600.0
    disable_after_failures: int = Field(default=0, ge=0)
    allow_private_targets: Annotated[tuple[str, ...], NoDecode] = ()
    # The HTTP proxy every delivery goes through: http://[user:password@]host:port, e.g. to
    # send from fixed egress addresses. The target is still checked (SSRF policy) first.
    delivery_proxy: Annotated[DeliveryProxy | None, NoDecode] = None
    # Retry tasks a fanout worker holds in memory per tier before it stops reading that tier.
    fanout_max_waiting: int = Field(default=20000, ge=1)

    @field_validator("api_keys", mode="before")
    @classmethod
    def _parse_api_keys(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        keys: dict[str, str] = {}
        for pair in filter(None, (item.strip() for item in value.split(","))):
            key, sep, tenant = pair.rpartition(":")
            if not sep or not key or not tenant:
                raise ValueError("WEBHOOKS_API_KEYS must be comma-separated key:tenant pairs")
            keys[key] = tenant
        return keys

    @field_validator("secrets_key", "delivery_proxy", mode="before")
    @classmethod
    def _unset_when_empty(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator(
        "idempotency_window",
        "delivery_timeout",
        "secret_rotation_overlap",
        "disable_after",
        "ingest_produce_timeout",
        "shutdown_delay",
        mode="before",
    )
    @classmethod
    def _parse_duration(cls, value: object) -> object:
        return parse_duration(value) if isinstance(value, str | int | float) else value

    @field_validator("allow_private_targets", mode="before")
    @classmethod
    def _parse_private_targets(cls, value: object) -> object:
        """``true`` allows every address; otherwise a comma-separated CIDR list."""
        if not isinstance(value, str):
            return value
        text = value.strip().lower()
        if text in ("", "false", "0", "no"):
            return ()
        if text in ("true", "1", "yes", "*"):
            return ("0.0.0.0/0", "::/0")
        networks = tuple(item.strip() for item in value.split(",") if item.strip())
        for network in networks:
            ipaddress.ip_network(network, strict=False)  # raises on a typo
        return networks

    @field_validator("retry_schedule", mode="before")
    @classmethod
    def _parse_schedule(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        if not all(item.strip() for item in value.split(",")):  # "" or "1m,,5m": a typo
            raise ValueError("WEBHOOKS_RETRY_SCHEDULE must be comma-separated durations, "
                             "e.g. 1m,5m,30m")
        return RetrySchedule.parse(value)

    @model_validator(mode="after")
    def _jitter_schedule(self) -> Self:
        """The schedule carries the jitter, so it travels as one value."""
        self.retry_schedule = replace(self.retry_schedule, jitter=self.retry_jitter)
        return self

    @property
    def kafka(self) -> KafkaConnection:
        """How the Kafka clients connect (what :mod:`webhooks.kafka` takes)."""
        return KafkaConnection(
            bootstrap=self.kafka_bootstrap, security_protocol=self.kafka_security_protocol,
            sasl_mechanism=self.kafka_sasl_mechanism, sasl_username=self.kafka_sasl_username,
            sasl_password=self.kafka_sasl_password, ssl_ca_location=self.kafka_ssl_ca_location,
            topic_prefix=self.topic_prefix, linger_ms=self.kafka_linger_ms)


class StartRefused(RuntimeError):
    """A service cannot start with these settings here; the message tells the operator
    what to change (the command line prints it as one line and exits 1)."""


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use."""
    return Settings()
