"""Test harness for the fanout worker: writes endpoints and events to the real broker
the way the eventlog and ingest services do."""

from __future__ import annotations

from typing import Any

from confluent_kafka import Producer

from webhooks.endpoints import Endpoint, EndpointSecret, new_endpoint_id
from webhooks.envelope import Envelope, format_timestamp, utcnow
from webhooks.kafka import create_producer, produce_sync
from webhooks.settings import Settings
from webhooks.signing import generate_secret
from webhooks.topics import Topics


class Platform:
    """Writes endpoints and events the way the eventlog and ingest services do."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topics = Topics.from_settings(settings)
        self._producer: Producer = create_producer(settings)

    def endpoint(self, url: str, events: list[str], tenant: str = "acme",
                 secrets: list[EndpointSecret] | None = None, **fields: Any) -> Endpoint:
        now = format_timestamp(utcnow())
        endpoint = Endpoint(id=new_endpoint_id(), tenant=tenant, url=url, events=events,
                            secrets=secrets or [EndpointSecret(secret=generate_secret())],
                            created=now, updated=now, **fields)
        self.put_endpoint(endpoint)
        return endpoint

    def put_endpoint(self, endpoint: Endpoint) -> None:
        produce_sync(self._producer, self.topics.endpoints, endpoint.to_json(),
                     key=endpoint.id.encode())

    def delete_endpoint(self, endpoint_id: str) -> None:
        produce_sync(self._producer, self.topics.endpoints, None, key=endpoint_id.encode())

    def event(self, type: str, tenant: str = "acme", **data: Any) -> Envelope:
        envelope = Envelope.create(type=type, tenant=tenant, data={"object": data},
                                   api_version=self.settings.api_version)
        produce_sync(self._producer, self.topics.events, envelope.to_json(),
                     key=tenant.encode())
        return envelope

    def events(self, envelopes: list[Envelope]) -> None:
        """Publish many at once (one flush)."""
        for envelope in envelopes:
            self._producer.produce(self.topics.events, envelope.to_json(),
                                   key=envelope.tenant.encode())
        assert self._producer.flush(30) == 0


def partition_of(key: str, partitions: int) -> int:
    """The partition the worker's (aiokafka) producer puts ``key`` in."""
    from aiokafka.partitioner import murmur2

    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions
