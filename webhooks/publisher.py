"""Producer SDK: publish events straight to Kafka, for services that already speak Kafka.

    publisher = EventPublisher(settings, tenant="acme")
    envelope = publisher.publish("order.shipped", {"object": {"id": "order_456"}})
    publisher.close()

:meth:`EventPublisher.publish` builds and validates the envelope locally (the same
checks as ``POST /v1/events``, so mistakes fail in the caller, not later), then
produces the event to the ingest topic, keyed by tenant, and waits for the broker's
acknowledgement. The ingest service's Kafka intake appends it to the events topic.
Because the id is fixed here, publishing the same envelope again (a retry after a
timeout) is recognised by ingest and not appended twice: retry with ``id=envelope.id``.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from webhooks.acked_producer import AckedProducer
from webhooks.envelope import Envelope, format_timestamp, parse_timestamp
from webhooks.event_create import IntakeError, build_event
from webhooks.settings import Settings
from webhooks.topics import Topics


class PublishError(ValueError):
    """The event is invalid; ``detail`` names the field and why."""


class EventPublisher:
    """A long-lived publisher for one producer service (one Kafka producer inside)."""

    def __init__(self, settings: Settings, tenant: str | None = None,
                 timeout: float = 30.0) -> None:
        self._settings = settings
        self._topic = Topics.from_settings(settings).ingest
        self._tenant = tenant
        self._timeout = timeout
        self._producer = AckedProducer(settings.kafka, timeout=timeout)

    def build(self, type: str, data: dict[str, Any], *, tenant: str | None = None,
              id: str | None = None, created: datetime | str | None = None,
              api_version: str | None = None) -> Envelope:
        """The envelope ``publish`` would send; raises :class:`PublishError` if invalid."""
        document: dict[str, Any] = {"type": type, "data": data,
                                    "tenant": tenant or self._tenant}
        if document["tenant"] is None:
            raise PublishError("tenant: required (pass it here or to EventPublisher)")
        if id is not None:
            document["id"] = id
        if created is not None:
            document["created"] = (format_timestamp(parse_timestamp(created))
                                   if isinstance(created, str) else format_timestamp(created))
        if api_version is not None:
            document["api_version"] = api_version
        try:
            request = build_event(document, caller_tenant=None,
                                  default_api_version=self._settings.api_version)
        except IntakeError as exc:
            raise PublishError(exc.detail) from exc
        return request.envelope

    def publish(self, type: str, data: dict[str, Any], *, tenant: str | None = None,
                id: str | None = None, created: datetime | str | None = None,
                api_version: str | None = None) -> Envelope:
        """Validate, produce to the ingest topic, wait for the acknowledgement, return the envelope.

        Raises :class:`PublishError` for an invalid event and
        :class:`confluent_kafka.KafkaException` if Kafka did not acknowledge in time.
        """
        envelope = self.build(type, data, tenant=tenant, id=id, created=created,
                              api_version=api_version)
        self.send(envelope)
        return envelope

    def send(self, envelope: Envelope) -> None:
        """Produce an already built envelope (e.g. a retry of an earlier publish)."""
        body = json.dumps(envelope.model_dump(), separators=(",", ":")).encode()
        if len(body) > self._settings.max_body_bytes:
            raise PublishError(f"body: larger than the limit of {self._settings.max_body_bytes} "
                               "bytes")
        self._producer.send(self._topic, body, key=envelope.tenant.encode())

    def close(self) -> None:
        """Deliver anything still queued (bounded by the timeout), release the client."""
        self._producer.close(self._timeout)
