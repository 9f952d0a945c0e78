"""``webhooks dlq …``: what died after the last retry, and bringing it back."""

from __future__ import annotations

import sys
from typing import Any

import click

from services.cli.client import CliSession, pass_session
from services.cli.output import Column, json_option, print_json, print_record, print_rows
from services.cli.params import MOMENT

DLQ_COLUMNS: list[Column] = [
    ("id", "id"), ("endpoint", "endpoint_id"), ("event", "event_id"), ("type", "event_type"),
    ("attempts", "attempts"), ("reason", "reason"), ("last error", "last_error"),
    ("dead since", "dead_lettered_at"),
]
DLQ_FIELDS = ("id", "endpoint_id", "event_id", "event_type", "trigger", "attempts", "reason",
              "last_error", "last_response_status", "dead_lettered_at")
REPLAY_CHUNK = 100  # ids per replay request


def _filters(endpoint_id: str | None, type_: str | None, created_after: str | None,
             created_before: str | None) -> dict[str, Any]:
    found = {"endpoint_id": endpoint_id, "type": type_, "created_after": created_after,
             "created_before": created_before}
    return {name: value for name, value in found.items() if value is not None}


def filter_options(command: Any) -> Any:
    """The DLQ filters, named as in the API."""
    for option in reversed([
        click.option("--endpoint", "endpoint_id", help="Only this endpoint's dead tasks."),
        click.option("--type", "type_", help="Event type: order.shipped or order.*."),
        click.option("--created-after", type=MOMENT,
                     help="Only tasks dead-lettered after this time (RFC 3339, or 2h "
                          "for 2 hours ago)."),
        click.option("--created-before", type=MOMENT,
                     help="Only tasks dead-lettered before this time."),
    ]):
        command = option(command)
    return command


@click.group()
def dlq() -> None:
    """The dead-letter queue: deliveries that failed every retry."""


@dlq.command("list")
@filter_options
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True,
              help="At most this many entries.")
@click.option("--all", "all_", is_flag=True, help="Every matching entry (no --limit).")
@json_option
@pass_session
def list_dlq(session: CliSession, endpoint_id: str | None, type_: str | None,
             created_after: str | None, created_before: str | None, limit: int, all_: bool,
             as_json: bool) -> None:
    """List dead-lettered deliveries, oldest first."""
    rows = list(session.api().paginate(
        "/v1/dlq", _filters(endpoint_id, type_, created_after, created_before),
        None if all_ else limit))
    print_rows(rows, DLQ_COLUMNS, as_json, empty="the dead-letter queue is empty")


@dlq.command("show")
@click.argument("dlq_id")
@json_option
@pass_session
def show_dlq(session: CliSession, dlq_id: str, as_json: bool) -> None:
    """Show one dead-lettered delivery with its attempt history."""
    entry = session.api().get(f"/v1/dlq/{dlq_id}")
    if as_json:
        print_json(entry)
        return
    print_record(entry, False, DLQ_FIELDS)
    history = entry.get("history") or []
    if history:
        click.echo("")
        print_rows(history, [("time", "timestamp"), ("#", "attempt"), ("status", "status"),
                             ("http", "response_status"), ("error", "error")], False)
    click.echo("")
    click.echo(f"event: {entry.get('event')}")


@dlq.command("replay")
@click.argument("dlq_ids", nargs=-1)
@filter_options
@json_option
@pass_session
def replay(session: CliSession, dlq_ids: tuple[str, ...], endpoint_id: str | None,
           type_: str | None, created_after: str | None, created_before: str | None,
           as_json: bool) -> None:
    """Deliver dead-lettered tasks again (same webhook-id): the ids given, or every entry
    matching the filters (e.g. --endpoint ep_… after fixing that endpoint)."""
    filters = _filters(endpoint_id, type_, created_after, created_before)
    if dlq_ids and filters:
        raise click.UsageError("give DLQ ids or filters, not both")
    if not dlq_ids and not filters:
        raise click.UsageError("give DLQ ids, or filters such as --endpoint ep_…")
    api = session.api()
    ids = list(dlq_ids)
    if filters:
        # Listed first, so that the progress bar knows the total, then replayed by id.
        ids = [entry["id"] for entry in api.paginate("/v1/dlq", filters, None)]
    chunks = [ids[i:i + REPLAY_CHUNK] for i in range(0, len(ids), REPLAY_CHUNK)]
    queued, skipped, skipped_endpoints = 0, 0, set()
    with click.progressbar(length=len(ids), label="replaying", file=sys.stderr,
                           show_pos=True) as bar:
        for chunk in chunks:
            answer = api.post("/v1/dlq/replay", {"ids": chunk}, timeout=120.0)
            queued += answer["queued"]
            skipped += answer.get("skipped", 0)
            skipped_endpoints.update(f"{s['endpoint_id']} ({s['reason']})"
                                     for s in answer.get("skipped_endpoints", []))
            bar.update(len(chunk))
    if as_json:
        print_json({"queued": queued, "skipped": skipped})
        return
    click.echo(f"queued {queued} dead-lettered deliveries again")
    if skipped:
        click.echo(f"skipped {skipped} whose endpoint is gone or disabled: "
                   f"{', '.join(sorted(skipped_endpoints))}")
