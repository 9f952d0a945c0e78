"""Following ``GET /v1/events/stream`` (Server-Sent Events), reconnecting when it drops.

:func:`follow_events` yields each event once, in log order, however often the
connection breaks: it reconnects with ``Last-Event-ID`` set to the last id received,
and the stream continues just after it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from services.cli.client import ApiClient, ApiError

STREAM_PATH = "/v1/events/stream"
RECONNECT_DELAYS = (0.5, 1.0, 2.0, 5.0)  # seconds, then the last one again


@dataclass
class SseMessage:
    """One block of a text/event-stream: its id (None: unchanged), data and comments."""

    id: str | None = None
    data: str | None = None
    comments: list[str] = field(default_factory=list)


def parse_sse(lines: Iterable[str]) -> Iterator[SseMessage]:
    """The blocks of an event stream, line by line (WHATWG ``text/event-stream`` rules
    for the fields the platform sends: ``id``, ``data``, comments; others ignored)."""
    message, data = SseMessage(), []
    for line in lines:
        if line == "":
            if data or message.id is not None or message.comments:
                message.data = "\n".join(data) if data else None
                yield message
            message, data = SseMessage(), []
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "":
            message.comments.append(value)
        elif name == "id":
            message.id = value
        elif name == "data":
            data.append(value)


def follow_events(client: ApiClient, params: dict[str, Any], *, cursor: str | None = None,
                  on_connect: Callable[[bool], None] | None = None,
                  on_reconnect: Callable[[str], None] | None = None
                  ) -> Iterator[tuple[dict[str, Any], str]]:
    """Each event of the stream (the envelope, and its raw JSON text), for ever.

    A dropped connection or an unavailable eventlog (5xx) is retried with growing
    delays, resuming after the last event id seen (``on_reconnect`` hears why); an
    error answer that retrying cannot fix (4xx) raises :class:`ApiError`.
    ``on_connect(again)`` runs once the stream is open: from then on, new events come.
    """
    last_id = cursor
    failures = 0
    connected_before = False
    while True:
        try:
            with client.open_stream(STREAM_PATH, params, last_id) as response:
                failures = 0
                if on_connect is not None:
                    on_connect(connected_before)
                connected_before = True
                for message in parse_sse(response.iter_lines()):
                    if message.id is not None:
                        last_id = message.id
                    if message.data is not None:
                        yield json.loads(message.data), message.data
            reason = "the stream ended"
        except ApiError as exc:
            if exc.status is None or exc.status < 500:
                raise
            reason = str(exc)
        except httpx.HTTPError as exc:
            reason = f"connection lost ({exc.__class__.__name__})"
        delay = RECONNECT_DELAYS[min(failures, len(RECONNECT_DELAYS) - 1)]
        failures += 1
        if on_reconnect is not None:
            on_reconnect(f"{reason}; reconnecting in {delay:g}s")
        time.sleep(delay)
