"""Failures: a sink that dies mid-stream and restarts (the API still shows every event
exactly once), and a store that fails (503)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient

from services.eventlog.app import create_app
from services.eventlog.clickhouse import create_clickhouse_client
from services.eventlog.sink import EventLogSink
from tests.services.eventlog.conftest import ACME
from tests.support.backends import with_database
from tests.support.eventlog import (
    SinkDyingBeforeCommit,
    eventually,
    make_event,
    page_all,
    publish_events,
    rows_written,
)
from webhooks.settings import Settings


@pytest.fixture(scope="module")
def api_only(eventlog_settings: Settings) -> Iterator[TestClient]:
    """The API without its own sink: this test starts and kills sinks itself."""
    with TestClient(create_app(eventlog_settings.model_copy(
            update={"eventlog_role": "api"}))) as client:
        yield client


def test_sink_restart_mid_stream_leaves_no_gaps_or_duplicates(
        api_only: TestClient, eventlog_settings: Settings) -> None:
    sent: list[str] = []
    seen: list[str] = []
    stop_paging = threading.Event()
    cursor: list[str | None] = [None]

    def pager() -> None:  # a client paging and resuming all along
        while not stop_paging.is_set():
            page, cursor[0] = page_all(api_only, ACME, cursor[0], limit=25)
            seen.extend(e["id"] for e in page)
            time.sleep(0.05)

    reader = threading.Thread(target=pager)
    reader.start()
    try:
        sent += [e.id for e in publish_events(eventlog_settings,
                                              [make_event("acme") for _ in range(300)])]
        before = rows_written("events")
        dying = SinkDyingBeforeCommit(eventlog_settings).start()
        eventually(lambda: len(seen) >= 150)  # the client saw part of it...
        dying.stop()  # ...then the sink died without committing anything
        assert dying.uncommitted > 0
        sent += [e.id for e in publish_events(eventlog_settings,
                                              [make_event("acme") for _ in range(200)])]
        sink = EventLogSink(eventlog_settings).start()  # same group: resumes from the commit
        try:
            eventually(lambda: len(seen) >= len(sent))
            # The replay re-read what the dying sink had inserted and stored none of it again.
            eventually(lambda: rows_written("events") - before >= 500)
        finally:
            sink.stop()
        assert rows_written("events") - before == 500
    finally:
        stop_paging.set()
        reader.join()
    final, _ = page_all(api_only, ACME, cursor[0], limit=25)
    seen += [e["id"] for e in final]
    assert seen == sent  # each once, in log order, across the replay


def test_store_failures_answer_503_problems(make_settings: Callable[..., Settings],
                                           clickhouse_base_url: str) -> None:
    """A broken store is a retryable 503 problem, never a 500 or a wrong (empty) page."""
    database = f"broken{uuid.uuid4().hex[:8]}"
    broken = make_settings(eventlog_role="api",
                           clickhouse_url=with_database(clickhouse_base_url, database))
    with TestClient(create_app(broken)) as api:
        create_clickhouse_client(broken.clickhouse_url).command("DROP TABLE sink_positions")
        response = api.get("/v1/events", headers=ACME)
        assert response.status_code == 503
        assert response.headers["content-type"] == "application/problem+json"
        assert response.headers["retry-after"] == "5"
        assert api.get("/v1/events", params={"tenant": "../etc"},
                       headers=ACME).status_code == 400
