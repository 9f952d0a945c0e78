"""``webhooks endpoints …``: subscribe URLs to events, change them, test them."""

from __future__ import annotations

from typing import Any

import click

from services.cli.client import CliSession, pass_session
from services.cli.output import Column, json_option, print_json, print_record, print_rows

ENDPOINT_COLUMNS: list[Column] = [
    ("id", "id"), ("url", "url"), ("events", "events"),
    ("status", lambda e: "disabled" if e.get("disabled") else "enabled"),
    ("description", "description"),
]
ENDPOINT_FIELDS = ("id", "url", "events", "description", "rate_limit", "disabled",
                   "disabled_reason", "created", "updated")


@click.group()
def endpoints() -> None:
    """Manage the endpoints (URLs) that receive your webhooks."""


def _print_endpoint(endpoint: dict[str, Any], as_json: bool) -> None:
    fields = [*ENDPOINT_FIELDS, *(["secret"] if "secret" in endpoint else [])]
    print_record(endpoint, as_json, fields)


@endpoints.command("create")
@click.option("--url", required=True, help="Where to POST the webhooks.")
@click.option("--events", "events_", multiple=True, default=("*",), show_default=True,
              help="Event types to subscribe to: order.shipped, order.* or *. Repeat "
                   "for several.")
@click.option("--description", default="", help="A note for people.")
@click.option("--secret", help="A whsec_… signing secret; generated when omitted.")
@click.option("--rate-limit", type=click.IntRange(min=1),
              help="At most this many deliveries per second.")
@json_option
@pass_session
def create(session: CliSession, url: str, events_: tuple[str, ...], description: str,
           secret: str | None, rate_limit: int | None, as_json: bool) -> None:
    """Create an endpoint; prints its id and signing secret."""
    body: dict[str, Any] = {"url": url, "events": list(events_), "description": description}
    if secret is not None:
        body["secret"] = secret
    if rate_limit is not None:
        body["rate_limit"] = rate_limit
    _print_endpoint(session.api().post("/v1/endpoints", body), as_json)


@endpoints.command("list")
@json_option
@pass_session
def list_(session: CliSession, as_json: bool) -> None:
    """List your endpoints."""
    rows = session.api().get("/v1/endpoints")["data"]
    print_rows(rows, ENDPOINT_COLUMNS, as_json, empty="no endpoints yet")


@endpoints.command("show")
@click.argument("endpoint_id")
@click.option("--secrets", is_flag=True, help="Also print the signing secrets.")
@json_option
@pass_session
def show(session: CliSession, endpoint_id: str, secrets: bool, as_json: bool) -> None:
    """Show one endpoint (and, with --secrets, its signing secrets)."""
    api = session.api()
    endpoint = api.get(f"/v1/endpoints/{endpoint_id}")
    if secrets:
        endpoint["secrets"] = api.get(f"/v1/endpoints/{endpoint_id}/secret")["secrets"]
    if as_json:
        print_json(endpoint)
        return
    print_record(endpoint, False, ENDPOINT_FIELDS)
    for secret in endpoint.get("secrets", []):
        click.echo(f"secret: {secret['secret']}  (expires: {secret.get('expires') or 'never'})")


@endpoints.command("update")
@click.argument("endpoint_id")
@click.option("--url", help="New target URL.")
@click.option("--events", "events_", multiple=True,
              help="Replace the subscribed event types (repeat for several).")
@click.option("--description", help="New description.")
@click.option("--rate-limit", type=click.IntRange(min=1), help="New deliveries per second.")
@json_option
@pass_session
def update(session: CliSession, endpoint_id: str, url: str | None, events_: tuple[str, ...],
           description: str | None, rate_limit: int | None, as_json: bool) -> None:
    """Change an endpoint: only the options given change."""
    changes: dict[str, Any] = {"url": url, "events": list(events_) or None,
                               "description": description, "rate_limit": rate_limit}
    changes = {name: value for name, value in changes.items() if value is not None}
    if not changes:
        raise click.UsageError("nothing to change: give --url, --events, --description "
                               "or --rate-limit")
    _patch(session, endpoint_id, changes, as_json)


def _patch(session: CliSession, endpoint_id: str, changes: dict[str, Any],
           as_json: bool) -> None:
    _print_endpoint(session.api().request("PATCH", f"/v1/endpoints/{endpoint_id}",
                                          json=changes), as_json)


@endpoints.command("enable")
@click.argument("endpoint_id")
@json_option
@pass_session
def enable(session: CliSession, endpoint_id: str, as_json: bool) -> None:
    """Re-enable an endpoint (deliveries resume with new events; see `recover`)."""
    _patch(session, endpoint_id, {"disabled": False}, as_json)


@endpoints.command("disable")
@click.argument("endpoint_id")
@json_option
@pass_session
def disable(session: CliSession, endpoint_id: str, as_json: bool) -> None:
    """Disable an endpoint: nothing is delivered to it until it is enabled again."""
    _patch(session, endpoint_id, {"disabled": True}, as_json)


@endpoints.command("delete")
@click.argument("endpoint_id")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_session
def delete(session: CliSession, endpoint_id: str, yes: bool) -> None:
    """Delete an endpoint for good."""
    if not yes:
        click.confirm(f"Delete endpoint {endpoint_id}?", abort=True)
    session.api().request("DELETE", f"/v1/endpoints/{endpoint_id}")
    click.echo(f"deleted {endpoint_id}")


@endpoints.command("rotate-secret")
@click.argument("endpoint_id")
@json_option
@pass_session
def rotate_secret(session: CliSession, endpoint_id: str, as_json: bool) -> None:
    """Issue a new signing secret; the old one keeps signing for the overlap period."""
    endpoint = session.api().post(f"/v1/endpoints/{endpoint_id}/rotate-secret")
    if as_json:
        print_json(endpoint)
    else:
        click.echo(f"new secret of {endpoint['id']}: {endpoint['secret']}")


@endpoints.command("test")
@click.argument("endpoint_id")
@json_option
@pass_session
def test(session: CliSession, endpoint_id: str, as_json: bool) -> None:
    """Send a webhook.test event to the endpoint through the normal delivery path."""
    queued = session.api().post(f"/v1/endpoints/{endpoint_id}/test")
    if as_json:
        print_json(queued)
    else:
        tasks = queued.get("tasks") or [{}]
        click.echo(f"queued a webhook.test event ({tasks[0].get('event_id', '?')}) "
                   f"for {endpoint_id}; see `webhooks attempts {endpoint_id}`")
