"""``GET /v1/events/stream`` against the real broker and ClickHouse, served by a real uvicorn.

Events are produced onto the events topic (as ingest does) while a client reads the
stream over a real socket; the sink makes them visible and the stream sends them on.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from services.eventlog.app import create_app
from tests.services.eventlog.conftest import ACME, ADMIN, GLOBEX
from tests.support.eventlog import eventually, make_event, page_all, publish_events
from tests.support.server_thread import ServerThread
from webhooks.settings import Settings

HEARTBEAT = 0.2  # seconds: short, so that an idle stream shows one quickly


@dataclass
class Message:
    """One SSE block: its id, data lines joined, and comment lines."""

    id: str | None = None
    data: str | None = None
    comments: list[str] = field(default_factory=list)


class SseReader:
    """Reads SSE blocks off an open streaming response."""

    def __init__(self, response: httpx.Response) -> None:
        self.lines = response.iter_lines()

    def next(self) -> Message:
        message = Message()
        data: list[str] = []
        for line in self.lines:
            if line == "":
                if data or message.id is not None or message.comments:
                    message.data = "\n".join(data) if data else None
                    return message
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "":
                message.comments.append(value)
            elif name == "id":
                message.id = value
            elif name == "data":
                data.append(value)
        raise EOFError("the stream ended")

    def events(self, count: int, timeout: float = 30.0) -> list[Message]:
        """The next ``count`` messages that carry an event (heartbeats skipped)."""
        deadline = time.monotonic() + timeout
        found: list[Message] = []
        while len(found) < count:
            assert time.monotonic() < deadline, f"only {len(found)} of {count} events came"
            message = self.next()
            if message.data is not None:
                found.append(message)
        return found

    def until_comment(self, text: str, timeout: float = 10.0) -> Message:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = self.next()
            assert message.data is None, f"unexpected event {message.data}"
            if text in message.comments:
                return message
        raise AssertionError(f"no {text!r} comment within {timeout}s")


def event_ids(messages: list[Message]) -> list[str]:
    return [json.loads(m.data or "{}")["id"] for m in messages]


@pytest.fixture(scope="module")
def server(eventlog_settings: Settings) -> Iterator[ServerThread]:
    with ServerThread(create_app(eventlog_settings)) as running:
        yield running


@pytest.fixture()
def client(server: ServerThread) -> Iterator[httpx.Client]:
    # The read timeout is far above the heartbeat: a silent stream is a failure.
    with httpx.Client(base_url=server.url, timeout=httpx.Timeout(10.0)) as http:
        yield http


def open_stream(client: httpx.Client, headers: dict[str, str], **params: Any
                ) -> Any:
    return client.stream("GET", "/v1/events/stream", headers=headers,
                         params={"heartbeat": HEARTBEAT, **params})


def streams_open() -> float:
    return REGISTRY.get_sample_value("eventlog_event_streams_open") or 0.0


def test_events_published_while_streaming_arrive_in_order(
        client: httpx.Client, eventlog_settings: Settings) -> None:
    with open_stream(client, ACME) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        reader = SseReader(response)
        reader.until_comment("stream open")
        sent = publish_events(eventlog_settings,
                              [make_event("acme", n=n) for n in range(3)])
        received = reader.events(3)
    assert event_ids(received) == [event.id for event in sent]
    assert all(message.id for message in received)


def test_a_dropped_stream_resumes_with_last_event_id_without_gaps_or_repeats(
        client: httpx.Client, eventlog_settings: Settings) -> None:
    before = streams_open()
    with open_stream(client, ACME, type="resume.*") as response:
        reader = SseReader(response)
        reader.until_comment("stream open")
        first = publish_events(eventlog_settings,
                               [make_event("acme", "resume.tick", n=n) for n in range(10)])
        received = reader.events(4)
    # The connection is dropped with 6 events sent or on their way; the server notices.
    eventually(lambda: streams_open() == before, timeout=10)
    later = publish_events(eventlog_settings,
                           [make_event("acme", "resume.tick", n=n) for n in range(10, 15)])
    last_id = received[-1].id or ""
    with open_stream(client, {**ACME, "Last-Event-ID": last_id}, type="resume.*") as response:
        rest = SseReader(response).events(11)
    assert event_ids(received + rest) == [event.id for event in first + later]

    # ?cursor= does the same as the header; alone, it continues with the filter it carries.
    with open_stream(client, ACME, cursor=last_id) as response:
        again = SseReader(response).events(11)
    assert event_ids(again) == event_ids(rest)


def test_a_stream_dropped_before_any_event_resumes_from_where_it_opened(
        client: httpx.Client, eventlog_settings: Settings) -> None:
    with open_stream(client, ACME, type="early.*") as response:
        opened = SseReader(response).until_comment("stream open")
    assert opened.id, "the first message carries the start position"
    missed = publish_events(eventlog_settings, [make_event("acme", "early.bird")])[0]
    with open_stream(client, {**ACME, "Last-Event-ID": opened.id}) as response:
        assert event_ids(SseReader(response).events(1)) == [missed.id]


def test_without_a_cursor_the_stream_starts_now_and_since_replays_from_the_start(
        client: httpx.Client, eventlog_settings: Settings) -> None:
    old = publish_events(eventlog_settings, [make_event("acme", "start.old")])[0]
    # Visible in the listing (below the sink's watermark), so "now" is after it.
    eventually(lambda: page_all(client, ACME, type="start.*")[0])  # type: ignore[arg-type]
    with open_stream(client, ACME, type="start.*") as response:
        reader = SseReader(response)
        reader.until_comment("stream open")
        new = publish_events(eventlog_settings, [make_event("acme", "start.new")])[0]
        assert event_ids(reader.events(1)) == [new.id]
    with open_stream(client, ACME, type="start.*",
                     since=old.created.isoformat().replace("+00:00", "Z")) as response:
        # `since` is exclusive, like created_after: the old event's own instant is not after.
        assert event_ids(SseReader(response).events(1)) == [new.id]
    since = "2000-01-01T00:00:00Z"
    with open_stream(client, ACME, type="start.*", since=since) as response:
        assert event_ids(SseReader(response).events(2)) == [old.id, new.id]


def test_a_listing_cursor_continues_on_the_stream(
        client: httpx.Client, eventlog_settings: Settings) -> None:
    backlog = publish_events(eventlog_settings,
                             [make_event("acme", "paged.item", n=n) for n in range(3)])
    eventually(lambda: client.get(f"/v1/events/{backlog[-1].id}", headers=ACME
                                  ).status_code == 200)
    listed, cursor = page_all(client, ACME, type="paged.*")  # type: ignore[arg-type]
    assert [e["id"] for e in listed] == [e.id for e in backlog]
    with open_stream(client, ACME, type="paged.*", cursor=cursor) as response:
        reader = SseReader(response)
        reader.until_comment("stream open")
        new = publish_events(eventlog_settings, [make_event("acme", "paged.item", n=9)])
        assert event_ids(reader.events(1)) == [new[0].id]


def test_streams_are_tenant_scoped_and_filtered_by_type(
        client: httpx.Client, eventlog_settings: Settings) -> None:
    with (open_stream(client, GLOBEX, type="scope.*") as globex_response,
          open_stream(client, ACME, type="scope.order.*") as acme_response):
        globex, acme = SseReader(globex_response), SseReader(acme_response)
        globex.until_comment("stream open")
        acme.until_comment("stream open")
        sent = publish_events(eventlog_settings, [
            make_event("acme", "scope.order.created"),
            make_event("acme", "scope.invoice.paid"),
            make_event("globex", "scope.order.created"),
            make_event("acme", "scope.order.shipped"),
        ])
        assert event_ids(acme.events(2)) == [sent[0].id, sent[3].id]
        assert event_ids(globex.events(1)) == [sent[2].id]
        # Nothing else follows for either: only heartbeats.
        acme.until_comment("heartbeat")
        globex.until_comment("heartbeat")


def test_admin_keys_stream_the_tenant_they_name(
        client: httpx.Client, eventlog_settings: Settings) -> None:
    with open_stream(client, ADMIN, tenant="globex", type="admin.*") as response:
        reader = SseReader(response)
        reader.until_comment("stream open")
        sent = publish_events(eventlog_settings, [make_event("acme", "admin.x"),
                                                  make_event("globex", "admin.x")])
        assert event_ids(reader.events(1)) == [sent[1].id]


def test_an_idle_stream_sends_heartbeats(client: httpx.Client) -> None:
    with open_stream(client, ACME, type="idle.nothing") as response:
        reader = SseReader(response)
        reader.until_comment("stream open")
        beats = [reader.until_comment("heartbeat") for _ in range(2)]
    assert all(beat.data is None for beat in beats)


@pytest.mark.parametrize(("headers", "params", "status", "mentions"), [
    (ACME, {"cursor": "not-a-cursor"}, 400, "cursor"),
    (ACME, {"type": "Order Shipped"}, 400, "type"),
    (ACME, {"heartbeat": "0"}, 400, "heartbeat"),
    (ACME, {"since": "yesterday"}, 400, "since"),
    ({**ACME, "Last-Event-ID": "x.y"}, {}, 400, "cursor"),
    ({}, {}, 401, "API key"),
    (ADMIN, {}, 400, "tenant"),
    (ACME, {"tenant": "globex"}, 403, "tenant"),
])
def test_bad_requests_get_a_problem_before_the_stream_starts(
        client: httpx.Client, headers: dict[str, str], params: dict[str, str], status: int,
        mentions: str) -> None:
    response = client.get("/v1/events/stream", headers=headers, params=params)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert mentions in response.text


def test_a_heartbeat_moves_the_last_event_id_past_skipped_rows(
        client: httpx.Client, eventlog_settings: Settings) -> None:
    other = publish_events(eventlog_settings, [make_event("acme", "skip.other")])[0]
    eventually(lambda: [e for e in page_all(client, ACME)[0]  # type: ignore[arg-type]
                        if e["id"] == other.id])
    with open_stream(client, ACME, type="skip.wanted", since="2000-01-01T00:00:00Z"
                     ) as response:
        reader = SseReader(response)
        reader.until_comment("stream open")
        beat = reader.until_comment("heartbeat")
    assert beat.id, "a heartbeat after skipped rows carries the new position"
    with open_stream(client, {**ACME, "Last-Event-ID": beat.id}, type="skip.wanted",
                     since="2000-01-01T00:00:00Z") as response:
        reader = SseReader(response)
        reader.until_comment("stream open")
        wanted = publish_events(eventlog_settings, [make_event("acme", "skip.wanted")])[0]
        assert event_ids(reader.events(1)) == [wanted.id]


def test_a_cursor_of_other_filters_is_refused(client: httpx.Client) -> None:
    _, cursor = page_all(client, ACME, type="one.*")  # type: ignore[arg-type]
    response = client.get("/v1/events/stream", headers=ACME,
                          params={"type": "two.*", "cursor": cursor})
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert "different" in response.json()["detail"]


def test_a_stream_ends_when_its_key_is_revoked(client: httpx.Client) -> None:
    assert client.post("/v1/tenants", json={"id": "streamer"}, headers=ADMIN).status_code == 201
    created = client.post("/v1/tenants/streamer/keys", json={"scopes": ["read"]},
                          headers=ADMIN).json()
    with open_stream(client, {"Authorization": f"Bearer {created['key']}"}) as response:
        assert response.status_code == 200
        reader = SseReader(response)
        reader.until_comment("stream open")
        revoked = client.delete(f"/v1/tenants/streamer/keys/{created['id']}", headers=ADMIN)
        assert revoked.status_code == 204
        with pytest.raises(EOFError):
            while True:  # heartbeats until the server ends the stream
                reader.next()
