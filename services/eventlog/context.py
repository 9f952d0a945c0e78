"""What the eventlog routes share: stores, producer, policies, error responses, pages."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from clickhouse_connect.driver.client import Client
from fastapi import Response

from services.eventlog.cursor import Cursor, CursorError, cursor_key, resume
from services.eventlog.endpoint_store import EndpointStore
from services.eventlog.event_store import EventStore, Page
from services.eventlog.redelivery import DeliveryQueue
from webhooks.acked_producer import AckedProducer
from webhooks.endpoint_secrets import configured_keyring
from webhooks.kafka import create_consumer
from webhooks.problems import Problem, problem_responses
from webhooks.registry import Registry
from webhooks.settings import Settings
from webhooks.target_policy import TargetPolicy
from webhooks.topics import Topics

PROBLEM_RESPONSES = problem_responses(
    (400, "Bad request: malformed JSON, an invalid query or path parameter (code "
          "invalid_parameter), an invalid or mismatched cursor, an admin key without ?tenant="),
    (401, "Missing or invalid API key"),
    (403, "The API key lacks the scope the route needs (code missing_scope), or a tenant "
          "key asked to act for another tenant"),
    (404, "Not found (or another tenant's)"),
    (409, "Conflicts with the endpoint's state (disabled, not subscribed)"),
    (422, "Invalid fields in the JSON body"),
    (503, "Kafka or ClickHouse unavailable: retry later"),
)


@dataclass
class EventlogContext:
    """Long-lived collaborators of the API, built once per app."""

    settings: Settings
    client: Client
    producer: AckedProducer
    topics: Topics
    events: EventStore
    endpoints: EndpointStore
    queue: DeliveryQueue
    targets: TargetPolicy
    cursor_key: bytes
    registry: Registry

    @classmethod
    def create(cls, settings: Settings, client: Client, producer: AckedProducer,
               registry: Registry) -> EventlogContext:
        """The stores, delivery queue and policies for ``settings``, over ``client``."""
        topics = Topics.from_settings(settings)
        return cls(
            settings=settings, client=client, producer=producer, topics=topics,
            events=EventStore(client, topics),
            endpoints=EndpointStore(client, producer, topics,
                                    offsets=create_consumer(settings.kafka, "endpoint-offsets"),
                                    keyring=configured_keyring(settings, "the eventlog API")),
            queue=DeliveryQueue(producer, topics),
            targets=TargetPolicy.create(settings.allow_private_targets,
                                        production=settings.environment == "production"),
            cursor_key=cursor_key(settings),
            registry=registry,
        )

    def decode_cursor(self, token: str | None, listing: str, tenant: str,
                      filters: dict[str, Any], *, filters_given: bool = True
                      ) -> tuple[Cursor, str]:
        """The cursor to resume from (empty without a token) and the binding to re-issue it.

        The cursor carries the filters to list with (``cursor.filters``): a token's own
        when the request gives none (``filters_given=False``), else ``filters``, which
        must then be the token's (see :func:`services.eventlog.cursor.resume`).
        """
        try:
            return resume(token, listing, tenant, filters, self.cursor_key,
                          filters_given=filters_given)
        except CursorError as exc:
            raise Problem(400, f"cursor: {exc}") from exc


def page_response(page: Page, binding: str, key: bytes) -> Response:
    """``{data, has_more, next_cursor}`` with the stored JSON documents spliced in as-is
    (no decode and re-encode of every row)."""
    body = (b'{"data":[' + ",".join(page.rows).encode() + b'],"has_more":'
            + (b"true" if page.has_more else b"false") + b',"next_cursor":'
            + json.dumps(page.cursor.encode(binding, key)).encode() + b"}")
    return Response(body, media_type="application/json")

