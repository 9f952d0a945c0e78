"""Command-line value types shared by the tenant commands."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import click

from webhooks.durations import parse_duration
from webhooks.envelope import format_timestamp


class MomentType(click.ParamType):
    """An instant: RFC 3339 (``2026-12-01T08:00:00Z``; no zone means UTC) or a duration
    ago (``90m``, ``2h``, ``7d``). Converts to the API's timestamp text."""

    name = "time"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> str:
        if not isinstance(value, str):
            return format_timestamp(value)
        try:
            return format_timestamp(datetime.now(UTC) - timedelta(seconds=parse_duration(value)))
        except ValueError:
            pass
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            self.fail(f"{value!r} is neither a time (2026-12-01T08:00:00Z) nor a duration "
                      "ago (2h, 7d)", param, ctx)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return format_timestamp(moment)


class DurationType(click.ParamType):
    """A duration: ``30s``, ``15m``, ``1d``; converts to seconds."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> float:
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        if seconds <= 0:
            self.fail("must be more than zero", param, ctx)
        return seconds


MOMENT = MomentType()
DURATION = DurationType()


def parse_moment(text: str) -> datetime:
    """The datetime of a :data:`MOMENT` value (the API's timestamp text)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
