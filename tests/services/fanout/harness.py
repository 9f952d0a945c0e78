"""Test harness for the fanout worker: writes endpoints (secrets sealed) and events to the
real broker the way the eventlog and ingest services do."""

from __future__ import annotations

from typing import Any

from webhooks.acked_producer import AckedProducer
from webhooks.endpoints import Endpoint, EndpointSecret, new_endpoint_id
from webhooks.envelope import Envelope, utcnow
from webhooks.settings import Settings
from webhooks.signing import generate_secret
from webhooks.topics import Topics


class Platform:
    """Writes endpoints and events the way the eventlog and ingest services do."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topics = Topics.from_settings(settings)
        self._producer = AckedProducer(settings.kafka)
        self.endpoint_ids: set[str] = set()
        """The endpoints written here and not deleted since."""

    def endpoint(self, url: str, events: list[str], tenant: str = "acme",
                 secrets: list[EndpointSecret] | None = None, **fields: Any) -> Endpoint:
        now = utcnow()
        endpoint = Endpoint(id=new_endpoint_id(), tenant=tenant, url=url, events=events,
                            secrets=secrets or [EndpointSecret(secret=generate_secret())],
                            created=now, updated=now, **fields)
        self.put_endpoint(endpoint)
        return endpoint

    def put_endpoint(self, endpoint: Endpoint) -> None:
        """Write ``endpoint`` with its secrets sealed, as the eventlog does (the test keeps
        the plain record to verify signatures with)."""
        if self.settings.secrets_key is not None:
            endpoint = endpoint.sealed(self.settings.secrets_key)
        self._producer.send(self.topics.endpoints, endpoint.to_json(), key=endpoint.id.encode())
        self.endpoint_ids.add(endpoint.id)

    def delete_endpoint(self, endpoint_id: str) -> None:
        self._producer.send(self.topics.endpoints, None, key=endpoint_id.encode())
        self.endpoint_ids.discard(endpoint_id)

    def event(self, type: str, tenant: str = "acme", **data: Any) -> Envelope:
        envelope = Envelope.create(type=type, tenant=tenant, data={"object": data},
                                   api_version=self.settings.api_version)
        self._producer.send(self.topics.events, envelope.to_json(), key=tenant.encode())
        return envelope

    def events(self, envelopes: list[Envelope]) -> None:
        """Publish many at once (one wait for all the acknowledgements)."""
        self._producer.produce_all(self.topics.events,
                                   ((e.tenant.encode(), e.to_json()) for e in envelopes))


def partition_of(key: str, partitions: int) -> int:
    """The partition the worker's (aiokafka) producer puts ``key`` in."""
    from aiokafka.partitioner import murmur2

    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions
