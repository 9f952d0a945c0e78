"""What every paged listing of the eventlog API shares: page size, cursor, and the
checks of its ``type`` and time-range filters."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import Query

from webhooks.envelope import to_utc
from webhooks.matching import is_valid_filter
from webhooks.problems import Problem

LimitQuery = Annotated[int, Query(ge=1, le=1000, description="Rows per page, 1-1000.")]
CursorQuery = Annotated[str | None, Query(
    description="next_cursor of the previous page. It carries the filters of its "
                "listing: send it alone, or with exactly the same filters.",
    max_length=4096)]


def checked_types(type: str | None, *, in_body: bool = False) -> tuple[str, ...]:
    """``type`` as a filter tuple, or a problem: 400 for a query parameter, 422 for a
    field of a JSON body (as everywhere in the API)."""
    if type is not None and not is_valid_filter(type):
        where, status = ("body field", 422) if in_body else ("query parameter", 400)
        raise Problem(status, f"type ({where}): {type!r} is not an event type or a prefix "
                              "like order.*", code="invalid_parameter")
    return (type,) if type else ()


def checked_range(after: datetime | None, before: datetime | None, *, in_body: bool = False
                  ) -> tuple[datetime | None, datetime | None]:
    """The bounds in UTC (no zone means UTC), or a problem when they leave nothing."""
    after, before = after and to_utc(after), before and to_utc(before)
    if after and before and after >= before:
        where, status = ("body field", 422) if in_body else ("query parameter", 400)
        raise Problem(status, f"created_after ({where}): must be before created_before",
                      code="invalid_parameter")
    return after, before
