"""The versioned event envelope (v1) that travels on the events topic and in deliveries."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict
from ulid import ULID

from webhooks.json_schema import validate

ENVELOPE_SCHEMA = "envelope.v1"


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
    return to_utc(moment).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def parse_timestamp(text: str) -> datetime:
    """Parse an ISO-8601 timestamp; naive values are taken as UTC."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Envelope(BaseModel):
    """One event as stored and delivered. Construct with :meth:`create` or :meth:`from_json`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    type: str
    api_version: str
    created: str
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
        if isinstance(created, str):
            created = parse_timestamp(created)
        document = {
            "id": id or new_event_id(),
            "type": type,
            "api_version": api_version,
            "created": format_timestamp(created or utcnow()),
            "tenant": tenant,
            "data": data,
        }
        return cls.from_dict(document)

    @classmethod
    def from_dict(cls, document: dict[str, Any]) -> Envelope:
        """Validate a decoded envelope; raises :class:`webhooks.json_schema.SchemaError`."""
        validate(ENVELOPE_SCHEMA, document)
        return cls.model_validate(document)

    @classmethod
    def from_json(cls, raw: bytes | str) -> Envelope:
        return cls.from_dict(json.loads(raw))

    def to_json(self) -> bytes:
        """Compact JSON bytes: the exact body that is signed and sent."""
        return json.dumps(self.model_dump(), separators=(",", ":"), ensure_ascii=False).encode()

    @property
    def created_at(self) -> datetime:
        return parse_timestamp(self.created)
