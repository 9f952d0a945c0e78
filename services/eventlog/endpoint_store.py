"""Endpoint configuration: written to the compacted endpoints topic, read from ClickHouse.

Writes are produced keyed by endpoint id and acknowledged by Kafka (``acks=all``)
before the caller is answered; the fanout reads the same topic. Reads come from the
``endpoints`` table that the sink fills from that topic, taking each id's record at
its highest offset (tombstone = deleted). Any writer may publish (the fanout disables
endpoints on 410), so the topic, not this API, is the source of truth.

Read-after-write: after a write, :meth:`EndpointStore.save` waits (bounded) until the
sink's watermark for the record's partition has passed the record's offset, so the
caller's next GET sees its own write. If the sink lags beyond the bound, the write
still stands (Kafka acknowledged it) and the caller is answered from the produced
record; a GET right after may then briefly show the previous version.

Secrets at rest: every record this store writes has its signing secrets sealed with the
primary key of ``WEBHOOKS_SECRETS_KEY`` (new ones, plain ones from before encryption, and
those of an older key), so any change through the API also moves the record to the
current key. Records come back as stored; the routes open the secrets they show.

Read-before-change: a change derived from the current record (PATCH, secret rotation)
starts from :meth:`EndpointStore.latest`, which first waits (bounded) until the sink has
stored every record on the topic, so that it does not undo a write the table has not
caught up with yet (the fanout disabling the endpoint, another replica's change).

Listing: :meth:`EndpointStore.page` serves a tenant's live endpoints by id (ULIDs, so
oldest first), after the last id of the previous page, filtered on the latest record.
Idempotent creation: :meth:`EndpointStore.find_created_with` finds the live endpoint a
tenant created with an ``Idempotency-Key`` (kept on the record itself, so it lasts as
long as the endpoint and needs no store of its own).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError
from confluent_kafka import Consumer, KafkaException

from services.eventlog.event_store import EventStore
from webhooks.acked_producer import AckedProducer
from webhooks.endpoints import Endpoint
from webhooks.kafka import end_offsets
from webhooks.secret_encryption import SecretsKeyring
from webhooks.topics import Topics

log = logging.getLogger(__name__)

_LATEST = (
    "SELECT id, argMax(record, kafka_offset) AS record, argMax(deleted, kafka_offset) AS deleted, "
    "argMax(tenant, kafka_offset) AS owner FROM endpoints {where} GROUP BY id "
    "HAVING deleted = 0 AND owner = {{tenant:String}}{having} ORDER BY id{limit}"
)


def _latest(where: str, having: str = "", limit: str = "") -> str:
    return _LATEST.format(where=where, having=having, limit=limit)


def _tenants_ids(also: str = "") -> str:
    """Only ids that ever belonged to the tenant (a tombstone row has no tenant), whose
    rows also meet ``also``."""
    return "id IN (SELECT id FROM endpoints WHERE tenant = {tenant:String}" + also + ")"


@dataclass(frozen=True)
class EndpointFilters:
    """What a listing of endpoints is restricted to: their state and a URL substring
    (case-insensitive)."""

    disabled: bool | None = None
    url: str | None = None

    def describe(self) -> dict[str, Any]:
        """The filters as a plain dict: what a cursor carries and is bound to."""
        return {"disabled": self.disabled, "url": self.url}

    @classmethod
    def from_description(cls, described: dict[str, Any]) -> EndpointFilters:
        """The filters :meth:`describe` gave (as a cursor carries them back)."""
        disabled, url = described.get("disabled"), described.get("url")
        return cls(disabled=disabled if isinstance(disabled, bool) else None,
                   url=url if isinstance(url, str) else None)

    def having(self, params: dict[str, Any]) -> str:
        """Conditions on the latest record of each id, adding their parameters."""
        conditions = ""
        if self.disabled is not None:
            params["disabled"] = self.disabled
            conditions += " AND JSONExtractBool(record, 'disabled') = {disabled:Bool}"
        if self.url:
            params["url"] = self.url
            conditions += (" AND positionCaseInsensitiveUTF8(JSONExtractString(record, 'url'), "
                           "{url:String}) > 0")
        return conditions


class EndpointStore:
    """Tenant-scoped endpoint reads (ClickHouse) and writes (Kafka)."""

    def __init__(self, client: Client, producer: AckedProducer, topics: Topics,
                 offsets: Consumer, keyring: SecretsKeyring,
                 visibility_timeout: float = 5.0) -> None:
        """``offsets`` is a consumer used only to read the topic's end offsets; ``keyring``
        seals the secrets of every record written."""
        self.client = client
        self.keyring = keyring
        self.producer = producer
        self.topics = topics
        self.visibility_timeout = visibility_timeout
        self._positions = EventStore(client, topics)
        self._offsets = offsets
        self._offsets_lock = threading.Lock()  # requests run in a thread pool

    def list(self, tenant: str) -> list[Endpoint]:
        """Every live endpoint of ``tenant``, by id."""
        where = "WHERE " + _tenants_ids()
        result = self.client.query(_latest(where), parameters={"tenant": tenant})
        return [Endpoint.from_json(row[1]) for row in result.result_rows]

    def page(self, tenant: str, filters: EndpointFilters, after: str | None, limit: int
             ) -> tuple[list[Endpoint], bool]:
        """Up to ``limit`` live endpoints of ``tenant`` matching ``filters``, by id, with ids
        after ``after``; and whether more follow."""
        params: dict[str, Any] = {"tenant": tenant, "after": after or ""}
        where = "WHERE id > {after:String} AND " + _tenants_ids(" AND id > {after:String}")
        result = self.client.query(_latest(where, filters.having(params), f" LIMIT {limit + 1:d}"),
                                   parameters=params)
        rows = result.result_rows
        return [Endpoint.from_json(row[1]) for row in rows[:limit]], len(rows) > limit

    def get(self, tenant: str, endpoint_id: str) -> Endpoint | None:
        """One live endpoint of ``tenant`` (None if missing, deleted or another tenant's)."""
        result = self.client.query(_latest("WHERE id = {id:String}"),
                                   parameters={"tenant": tenant, "id": endpoint_id})
        rows = result.result_rows
        return Endpoint.from_json(rows[0][1]) if rows else None

    def find_created_with(self, tenant: str, idempotency_key: str) -> list[Endpoint]:
        """The live endpoints of ``tenant`` created with ``idempotency_key``, by id (one,
        unless two replicas raced), once the table holds every record written so far (or
        the bound passed), so that a retry finds the create it repeats."""
        self._wait_for_topic_end()
        where = "WHERE " + _tenants_ids(
            " AND JSONExtractString(record, 'idempotency', 'key') = {key:String}")
        result = self.client.query(_latest(where),
                                   parameters={"tenant": tenant, "key": idempotency_key})
        found = [Endpoint.from_json(row[1]) for row in result.result_rows]
        # The latest record keeps the key (a change copies it), but check it anyway.
        return [e for e in found if e.idempotency and e.idempotency.key == idempotency_key]

    def latest(self, tenant: str, endpoint_id: str) -> Endpoint | None:
        """:meth:`get` once the table holds every record written to the topic so far (or
        the bound passed): the record to derive a change from."""
        self._wait_for_topic_end()
        return self.get(tenant, endpoint_id)

    def _wait_for_topic_end(self) -> None:
        """Wait (bounded) until the table holds every record on the topic now."""
        try:
            ends = self.topic_ends(self.topics.endpoints)
        except KafkaException as exc:
            log.warning("cannot read the endpoints topic's end offsets (%s)", exc)
        else:
            self.wait_sinked({p: end - 1 for p, end in ends.items() if end > 0})

    def topic_ends(self, topic: str) -> dict[int, int]:
        """The end offsets of ``topic``'s partitions now (raises KafkaException)."""
        with self._offsets_lock:
            return end_offsets(self._offsets, topic, timeout=5)

    def close(self) -> None:
        """Release the offsets consumer."""
        with self._offsets_lock:
            self._offsets.close()

    def save(self, endpoint: Endpoint) -> Endpoint:
        """Publish ``endpoint`` with its secrets sealed (validated against ``endpoint.v1``)
        and wait until readable; returns the record as written."""
        checked = Endpoint.from_dict(endpoint.sealed(self.keyring).model_dump())
        written = self.producer.send(self.topics.endpoints, checked.to_json(),
                                     key=checked.id.encode())
        self.wait_sinked({written.partition: written.offset})
        return checked

    def delete(self, endpoint_id: str) -> None:
        """Publish a tombstone for ``endpoint_id`` and wait until readable."""
        written = self.producer.send(self.topics.endpoints, None, key=endpoint_id.encode())
        self.wait_sinked({written.partition: written.offset})

    def wait_sinked(self, offsets: dict[int, int]) -> bool:
        """Wait until the sink has written each partition's given offset; False on timeout."""
        deadline = time.monotonic() + self.visibility_timeout
        delay = 0.02
        while True:
            try:
                watermarks = self._positions.watermarks(self.topics.endpoints)
            except ClickHouseError as exc:
                # The write is already acknowledged by Kafka and stands; failing the request
                # now would tell the caller it did not happen. Answer from the record instead.
                log.warning("cannot read sink positions (%s); answering from the record", exc)
                return False
            if all(watermarks.get(partition, 0) > offset for partition, offset in offsets.items()):
                return True
            if time.monotonic() >= deadline:
                log.warning("endpoints %s not yet sinked after %.1fs", offsets,
                            self.visibility_timeout)
                return False
            time.sleep(delay)
            delay = min(delay * 2, 0.2)
