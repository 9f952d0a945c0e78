"""The versioned event envelope (v1) that travels on the events topic and in deliveries."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from functools import cached_property
from typing import Annotated, Any, ClassVar, Self

from pydantic import ConfigDict, PlainSerializer, PlainValidator
from ulid import ULID

from webhooks.record import JsonRecord

ENVELOPE_SCHEMA = "envelope.v1"
_BODY_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
"""What ``json.dumps(..., separators=(",", ":"), ensure_ascii=False)`` builds anew on every
call: one kept spares ingest ~1 µs of its ~3 per envelope."""


def new_event_id() -> str:
    """A unique, time-sortable event id: ``evt_`` and a ULID."""
    return f"evt_{ULID()}"


EARLIEST_CREATED = datetime(1900, 1, 1, tzinfo=UTC)
LATEST_CREATED = datetime(2299, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
"""The range of ClickHouse's ``DateTime64``: an event's ``created`` must lie in it."""


def to_utc(moment: datetime) -> datetime:
    """``moment`` in UTC (naive taken as UTC); an offset that would carry it past year 1
    or 9999 saturates there instead of overflowing."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        return (datetime.min if moment.year == 1 else datetime.max).replace(tzinfo=UTC)


def format_timestamp(moment: datetime) -> str:
    """UTC with microseconds and a ``Z``: ``2026-11-22T10:30:00.123456Z``."""
    # isoformat, not strftime("%Y"): strftime does not pad years before 1000.
    if moment.tzinfo is UTC:  # the usual case, ingest's hot path: drop "+00:00"
        return moment.isoformat(timespec="microseconds")[:-6] + "Z"
    return to_utc(moment).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def parse_timestamp(text: str) -> datetime:
    """Parse an ISO-8601 timestamp; naive values are taken as UTC."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def utcnow() -> datetime:
    """The current moment, aware, in UTC."""
    return datetime.now(UTC)


def _to_moment(value: object) -> datetime:
    """What a :data:`Timestamp` field holds: an ISO-8601 string or a datetime as aware UTC."""
    if isinstance(value, str):
        return to_utc(parse_timestamp(value))
    if isinstance(value, datetime):
        return to_utc(value)
    raise ValueError(f"not a timestamp: {value!r} (expected e.g. 2026-11-22T10:30:00Z)")


Timestamp = Annotated[
    datetime,
    PlainValidator(_to_moment, json_schema_input_type=str),
    PlainSerializer(format_timestamp, return_type=str),
]
"""A record's timestamp field: parsed from ISO-8601 (``Z`` or an offset; naive = UTC),
held as an aware UTC datetime, written by :func:`format_timestamp`."""


class Envelope(JsonRecord):
    """One event as stored and delivered. Construct with :meth:`create` or :meth:`from_json`."""

    model_config = ConfigDict(frozen=True)
    schema_name: ClassVar[str | None] = ENVELOPE_SCHEMA

    id: str
    type: str
    api_version: str
    created: Timestamp
    tenant: str
    data: dict[str, Any]

    @classmethod
    def create(
        cls,
        *,
        type: str,
        data: dict[str, Any],
        tenant: str,
        api_version: str,
        id: str | None = None,
        created: datetime | str | None = None,
    ) -> Envelope:
        """Fill in the id and timestamp, then validate against ``envelope.v1``."""
        return cls(id=id or new_event_id(), type=type, api_version=api_version,
                   created=created or utcnow(), tenant=tenant, data=data).check_schema()

    def document(self) -> dict[str, Any]:
        """The JSON document, ``data`` shared rather than copied (what ``model_dump`` gives,
        at a fraction of its cost: ingest builds one per event)."""
        return {"id": self.id, "type": self.type, "api_version": self.api_version,
                "created": format_timestamp(self.created), "tenant": self.tenant,
                "data": self.data}

    @cached_property
    def filtered_document(self) -> dict[str, Any]:
        """:meth:`document`, written once per envelope: what the payload filters of every
        endpoint of the tenant read."""
        return self.document()

    def check_schema(self) -> Envelope:
        """Check the JSON form against ``envelope.v1`` (raises ``SchemaError``)."""
        self._validate_schema(self.document())
        return self

    def to_json(self) -> bytes:
        """The exact body that is signed and delivered: compact :func:`json.dumps`, non-ASCII
        as UTF-8 (pinned by a golden test; do not change its spelling). Written once per
        envelope: the fanout sends one envelope to every matching endpoint."""
        return self._json

    @cached_property
    def _json(self) -> bytes:
        # Kept in the instance's __dict__, which pydantic's equality ignores (fields only).
        return _BODY_ENCODER.encode(self.document()).encode()

    def model_copy(self, *, update: dict[str, Any] | None = None, deep: bool = False) -> Self:
        """A copy, its JSON written anew (the original's would not reflect ``update``)."""
        copy = super().model_copy(update=update, deep=deep)
        copy.__dict__.pop("_json", None)
        copy.__dict__.pop("filtered_document", None)
        return copy
