"""Command-line value types shared by the tenant commands."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import click

from webhooks.durations import parse_duration
from webhooks.envelope import format_timestamp
from webhooks.json_schema import load_schema


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


class PatternType(click.ParamType):
    """A string that must match a pattern of the shared record schemas (``webhooks/schemas``):
    checked before it goes into a URL path, so a typo is a usage error, not a request."""

    def __init__(self, name: str, pattern: str, explanation: str) -> None:
        self.name = name
        self.pattern = re.compile(pattern)
        self.explanation = explanation

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> str:
        if not isinstance(value, str) or not self.pattern.fullmatch(value):
            self.fail(f"{value!r} is not a valid {self.name} ({self.explanation})", param, ctx)
        return value


_TENANT_ID_RULE = ("letters, digits, '_', '.', '-'; starts with a letter or digit; at most "
                   "64 characters")
_KEY_SCHEMA = load_schema("api_key.v1")["properties"]

MOMENT = MomentType()
DURATION = DurationType()
TENANT_ID = PatternType("tenant id", load_schema("tenant.v1")["properties"]["id"]["pattern"],
                        _TENANT_ID_RULE)
KEY_OWNER = PatternType("tenant id", _KEY_SCHEMA["tenant"]["pattern"],
                        f"{_TENANT_ID_RULE}; or '*' for admin keys")
KEY_ID = PatternType("key id", _KEY_SCHEMA["id"]["pattern"], "key_ and letters or digits")
SCOPES: tuple[str, ...] = tuple(_KEY_SCHEMA["scopes"]["items"]["enum"])
"""The scopes a key may hold (``publish``, ``read``, ``manage``, ``admin``)."""


def parse_moment(text: str) -> datetime:
    """The datetime of a :data:`MOMENT` value (the API's timestamp text)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
