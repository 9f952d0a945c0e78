"""The complete endpoints view, materialised by each worker from the compacted topic.

Events are keyed by tenant and endpoints by endpoint id, so a worker cannot rely on
co-partitioning: every worker follows *all* partitions of the endpoints topic from the
beginning (:class:`~webhooks.compacted_topic.CompactedTopicFollower`). A restart simply
rebuilds the view. A tombstone (value ``None``) deletes an endpoint.

:meth:`EndpointView.wait_ready` blocks until the view has caught up with the end
offsets seen at start-up, so that events handled right after a start match against
the full configuration rather than an empty table.
"""

from __future__ import annotations

import logging
import threading

from webhooks.compacted_topic import CompactedTopicFollower
from webhooks.endpoints import Endpoint
from webhooks.envelope import Envelope
from webhooks.json_schema import SchemaError
from webhooks.kafka import KafkaConnection

log = logging.getLogger(__name__)


class EndpointView(CompactedTopicFollower):
    """Endpoint id -> :class:`Endpoint`, kept current by a background consumer thread.

    If the thread fails, the error is logged and kept: :meth:`wait_ready` raises it.
    """

    thread_name = "endpoint-view"
    stop_timeout = 5.0

    def __init__(self, connection: KafkaConnection, topic: str) -> None:
        super().__init__(connection, topic)
        self._endpoints: dict[str, Endpoint] = {}
        self._by_tenant: dict[str, dict[str, Endpoint]] = {}
        self._lock = threading.Lock()

    # -- reading -------------------------------------------------------------------

    def get(self, endpoint_id: str) -> Endpoint | None:
        """The endpoint's current record, or None if unknown or deleted."""
        return self._endpoints.get(endpoint_id)

    def matching(self, envelope: Envelope) -> list[Endpoint]:
        """Endpoints of the envelope's tenant whose filters want it (enabled ones only)."""
        candidates = self._by_tenant.get(envelope.tenant, {})
        return [endpoint for endpoint in list(candidates.values()) if endpoint.wants(envelope)]

    def __len__(self) -> int:
        return len(self._endpoints)

    # -- writing -------------------------------------------------------------------

    def apply_record(self, key: bytes | None, value: bytes | None, timestamp_ms: int) -> None:
        """Apply one record of the topic as the follower reads it (keyless ones are skipped)."""
        if key is not None:
            self.apply(key.decode(), value)

    def apply(self, endpoint_id: str, value: bytes | None) -> None:
        """Apply one record of the endpoints topic (``None`` = tombstone = delete)."""
        if value is None:
            self._remove(endpoint_id)
            return
        # A bad record must not stop the view; it is logged and skipped. The log names
        # the fields but never the error messages: they quote values, signing secrets too.
        try:
            endpoint = Endpoint.from_json(value)
        except SchemaError as exc:
            log.error("skipping invalid endpoint record %s: invalid %s", endpoint_id,
                      ", ".join(exc.fields))
            return
        except Exception as exc:
            log.error("skipping unreadable endpoint record %s: %s", endpoint_id,
                      type(exc).__name__)
            return
        self.put(endpoint)

    def put(self, endpoint: Endpoint) -> None:
        """Store ``endpoint`` (also used to apply this worker's own writes immediately)."""
        with self._lock:
            previous = self._endpoints.get(endpoint.id)
            if previous is not None and previous.tenant != endpoint.tenant:
                self._by_tenant.get(previous.tenant, {}).pop(endpoint.id, None)
            self._endpoints[endpoint.id] = endpoint
            self._by_tenant.setdefault(endpoint.tenant, {})[endpoint.id] = endpoint

    def _remove(self, endpoint_id: str) -> None:
        with self._lock:
            previous = self._endpoints.pop(endpoint_id, None)
            if previous is not None:
                self._by_tenant.get(previous.tenant, {}).pop(endpoint_id, None)
