"""Events: ``send`` one, ``events list|show`` (and ``--follow`` live), ``attempts``,
``redeliver`` and ``recover``."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import click

from services.cli.client import CliSession, pass_session
from services.cli.output import Column, json_option, print_json, print_record, print_rows
from services.cli.params import DURATION, MOMENT, parse_moment
from services.cli.stream import follow_events
from webhooks.envelope import format_timestamp

LONG_REQUEST_SECONDS = 600.0  # recover: the API answers once every task is queued
EVENT_COLUMNS: list[Column] = [("id", "id"), ("type", "type"), ("created", "created"),
                               ("data", "data")]
DELIVERY_COLUMNS: list[Column] = [
    ("endpoint", "endpoint_id"), ("attempts", "attempts"), ("delivered", "delivered"),
    ("last status", "last_status"), ("http", "last_response_status"),
    ("error", "last_error"), ("last attempt", "last_attempt_at"),
    ("next attempt", "next_attempt_at"),
]
ATTEMPT_COLUMNS: list[Column] = [
    ("time", "timestamp"), ("event", "event_id"), ("type", "event_type"),
    ("#", "attempt"), ("trigger", "trigger"), ("status", "status"),
    ("http", "response_status"), ("error", "error"), ("ms", "latency_ms"),
]


@click.command()
@click.option("--type", "type_", help="Event type, e.g. order.shipped.")
@click.option("--data", "data_json", help='The data object as JSON, e.g. '
                                          '\'{"object": {"id": "order_1"}}\'.')
@click.option("--file", "file_", type=click.File("r"),
              help="A JSON file with the whole event body (type, data, optional id, created, "
                   "api_version); - reads standard input. Flags given override its fields.")
@click.option("--id", "event_id", help="The event id (evt_…); repeats are recognised.")
@click.option("--idempotency-key", help="Sent as Idempotency-Key: a repeat is not appended "
                                        "twice.")
@json_option
@pass_session
def send(session: CliSession, type_: str | None, data_json: str | None, file_: Any,
         event_id: str | None, idempotency_key: str | None, as_json: bool) -> None:
    """Publish an event through ingest (POST /v1/events)."""
    body: dict[str, Any] = {}
    if file_ is not None:
        try:
            body = json.load(file_)
        except ValueError as exc:
            raise click.BadParameter(f"not JSON: {exc}", param_hint="--file") from exc
        if not isinstance(body, dict):
            raise click.BadParameter("must hold a JSON object", param_hint="--file")
    if type_ is not None:
        body["type"] = type_
    if data_json is not None:
        try:
            body["data"] = json.loads(data_json)
        except ValueError as exc:
            raise click.BadParameter(f"not JSON: {exc}", param_hint="--data") from exc
    if event_id is not None:
        body["id"] = event_id
    if "type" not in body:
        raise click.UsageError("give --type (or a --file with a type)")
    body.setdefault("data", {})
    if session.api().settings.tenant:
        body.setdefault("tenant", session.api().settings.tenant)
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
    envelope = session.api().request("POST", "/v1/events", service="ingest", json=body,
                                     headers=headers)
    if as_json:
        print_json(envelope)
    else:
        click.echo(f"sent {envelope['id']} ({envelope['type']}, created {envelope['created']})")


@click.group()
def events() -> None:
    """Read the event log: list, show with deliveries, follow live."""


@events.command("list")
@click.option("--type", "type_", help="Exact type (order.shipped) or prefix (order.*).")
@click.option("--created-after", type=MOMENT, help="Only events created after this time "
                                                   "(2026-12-01T08:00:00Z, or 2h for 2 hours ago).")
@click.option("--created-before", type=MOMENT, help="Only events created before this time.")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True,
              help="At most this many events (with --follow: stop after this many).")
@click.option("--all", "all_", is_flag=True, help="Every matching event (no --limit).")
@click.option("--cursor", help="Continue after this cursor (a next_cursor or stream id).")
@click.option("--follow", "-f", is_flag=True,
              help="Stream events live as they arrive (from now; from --created-after or "
                   "--cursor on if given), reconnecting when the connection drops. Ctrl-C "
                   "stops.")
@json_option
@pass_session
def list_events(session: CliSession, type_: str | None, created_after: str | None,
                created_before: str | None, limit: int, all_: bool, cursor: str | None,
                follow: bool, as_json: bool) -> None:
    """List events of the log, oldest first (log order), or follow them live."""
    params = {"type": type_, "created_after": created_after, "created_before": created_before,
              "cursor": cursor}
    if follow:
        if created_before is not None:
            raise click.UsageError("--follow cannot end: leave out --created-before")
        _follow(session, {"type": type_, "since": created_after}, cursor,
                None if all_ else (limit if _given("limit") else None), as_json)
        return
    rows = list(session.api().paginate("/v1/events", params, None if all_ else limit))
    print_rows(rows, EVENT_COLUMNS, as_json, empty="no events")


def _given(name: str) -> bool:
    """Whether option ``name`` was on the command line (not its default)."""
    ctx = click.get_current_context()
    return ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE


def _follow(session: CliSession, params: dict[str, Any], cursor: str | None,
            limit: int | None, as_json: bool) -> None:
    def reconnecting(reason: str) -> None:
        click.echo(f"stream: {reason}", err=True)

    def connected(again: bool) -> None:
        click.echo("stream: reconnected" if again else "following events (Ctrl-C to stop)",
                   err=True)

    count = 0
    try:
        for envelope, raw in follow_events(session.api(), params, cursor=cursor,
                                           on_connect=connected, on_reconnect=reconnecting):
            if as_json:
                click.echo(raw)  # one JSON document per line
            else:
                click.echo(f"{envelope['created']}  {envelope['type']:<28} {envelope['id']}  "
                           f"{json.dumps(envelope.get('data'), separators=(',', ':'))[:80]}")
            sys.stdout.flush()
            count += 1
            if limit is not None and count >= limit:
                return
    except KeyboardInterrupt:
        click.echo(f"stopped after {count} events", err=True)


@events.command("show")
@click.argument("event_id")
@json_option
@pass_session
def show_event(session: CliSession, event_id: str, as_json: bool) -> None:
    """Show one event and how its delivery went, per endpoint."""
    event = session.api().get(f"/v1/events/{event_id}")
    if as_json:
        print_json(event)
        return
    print_record(event, False, ["id", "type", "created", "api_version", "tenant", "data"])
    click.echo("")
    print_rows(event["deliveries"], DELIVERY_COLUMNS, False,
               empty="deliveries: none recorded (no endpoint matched, or not attempted yet)")


@click.command()
@click.argument("endpoint_id")
@click.option("--status", type=click.Choice(["succeeded", "failed"]),
              help="Only succeeded or only failed attempts.")
@click.option("--event", "event_id", help="Only attempts to deliver this event (evt_…).")
@click.option("--error", help="Only attempts that failed with this error class (timeout, "
                              "connect, http_status, …).")
@click.option("--created-after", type=MOMENT, help="Only attempts made after this time "
                                                   "(RFC 3339, or 2h for 2 hours ago).")
@click.option("--created-before", type=MOMENT, help="Only attempts made before this time.")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True,
              help="At most this many attempts.")
@click.option("--all", "all_", is_flag=True, help="Every attempt (no --limit).")
@click.option("--show", is_flag=True, help="Each attempt in full: the request's headers as "
                                           "sent, the response's headers and body.")
@json_option
@pass_session
def attempts(session: CliSession, endpoint_id: str, status: str | None,
             event_id: str | None, error: str | None, created_after: str | None,
             created_before: str | None, limit: int, all_: bool, show: bool,
             as_json: bool) -> None:
    """List the delivery attempts of an endpoint, oldest first."""
    filters = {"status": status, "event_id": event_id, "error": error,
               "created_after": created_after, "created_before": created_before}
    rows = list(session.api().paginate(f"/v1/endpoints/{endpoint_id}/attempts", filters,
                                       None if all_ else limit))
    if show and rows and not as_json:
        click.echo("\n\n".join(describe_attempt(row) for row in rows))
    else:
        print_rows(rows, ATTEMPT_COLUMNS, as_json, empty="no attempts")


def describe_attempt(attempt: dict[str, Any]) -> str:
    """One attempt in full, as ``attempts --show`` prints it."""
    http = f"HTTP {attempt['response_status']}, " if attempt.get("response_status") else ""
    lines = [
        f"{attempt['id']}  {attempt['timestamp']}  attempt {attempt['attempt']} "
        f"({attempt['trigger']})",
        f"  event:    {attempt['event_id']} ({attempt['event_type']})",
        f"  url:      {attempt['url']}",
        f"  result:   {attempt['status']}, {http}{attempt['latency_ms']} ms"
        + (f", error {attempt['error']}" if attempt.get("error") else "")
        + (f" -> {attempt['outcome']}" if attempt.get("outcome") else ""),
    ]
    if attempt.get("next_attempt_at"):
        lines.append(f"  next:     {attempt['next_attempt_at']}")
    for title, key in (("request headers", "request_headers"),
                       ("response headers", "response_headers")):
        headers = attempt.get(key)
        if headers is None:
            lines.append(f"  {title}: none recorded")
            continue
        lines.append(f"  {title}:")
        lines += [f"    {name}: {value}" for name, value in headers]
        if key == "response_headers" and attempt.get("response_headers_truncated"):
            lines.append("    … (cut at 4 KiB)")
    body = attempt.get("response_body")
    lines.append("  response body:" + ("" if body else " -"))
    if body:
        lines += [f"    {line}" for line in body.splitlines()]
    return "\n".join(lines)


@click.command()
@click.argument("event_id")
@click.option("--endpoint", "endpoint_id", help="Only to this endpoint (default: every "
                                                "endpoint the event matches now).")
@json_option
@pass_session
def redeliver(session: CliSession, event_id: str, endpoint_id: str | None,
              as_json: bool) -> None:
    """Deliver an event again (same webhook-id)."""
    body = {"endpoint_id": endpoint_id} if endpoint_id else None
    queued = session.api().post(f"/v1/events/{event_id}/redeliver", body)
    if as_json:
        print_json(queued)
    else:
        targets = ", ".join(t["endpoint_id"] for t in queued["tasks"]) or "no endpoint"
        click.echo(f"queued {queued['queued']} deliveries of {event_id}: {targets}")


@click.command()
@click.argument("endpoint_id")
@click.option("--since", required=True, type=MOMENT,
              help="Events created at or after this time (RFC 3339, or 2h for 2 hours ago).")
@click.option("--until", type=MOMENT, help="…and before this time (default: now).")
@click.option("--window", type=DURATION, default="1d", show_default=True,
              help="Queue the range in windows of this length (one request each, with a "
                   "progress bar).")
@json_option
@pass_session
def recover(session: CliSession, endpoint_id: str, since: str, until: str | None,
            window: float, as_json: bool) -> None:
    """Deliver again every event an endpoint subscribes to, created in [since, until)."""
    start = parse_moment(since)
    end = parse_moment(until) if until else datetime.now(UTC)
    if end <= start:
        raise click.BadParameter("must be after --since", param_hint="--until")
    windows: list[tuple[datetime, datetime]] = []
    while start < end:
        stop = start + timedelta(seconds=window)
        if end - stop < timedelta(seconds=1):
            stop = end  # no sliver of a window at the end ("1h" ago is read before now)
        windows.append((start, stop))
        start = stop
    api = session.api()
    queued = 0
    with click.progressbar(windows, label="recovering", file=sys.stderr,
                           show_pos=True) as bar:
        for low, high in bar:
            # The answer comes once every task is in Kafka: a long request for a busy log.
            answer = api.post(f"/v1/endpoints/{endpoint_id}/recover",
                              {"since": format_timestamp(low), "until": format_timestamp(high)},
                              timeout=LONG_REQUEST_SECONDS)
            queued += answer["queued"]
    if as_json:
        print_json({"queued": queued, "requests": len(windows)})
    else:
        click.echo(f"queued {queued} events for {endpoint_id}")

