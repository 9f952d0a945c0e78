"""``webhooks listen --forward-to URL``: webhooks on a laptop without a public URL.

Follows the live event stream and POSTs each event to a local URL exactly as the
platform delivers webhooks: the envelope bytes as the body, Standard Webhooks headers,
signed with a session secret printed at start (give your receiver that secret; pass
``--secret`` to keep one across sessions). One line per delivery shows the time, type,
id and the local answer. A dropped stream reconnects and continues after the last event
received; an unreachable local server is reported and the next event is tried.
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime

import click
import httpx

from services.cli.client import CliSession, pass_session
from services.cli.stream import follow_events
from webhooks.signing import InvalidSecret, generate_secret, secret_key, signature_header

FORWARD_TIMEOUT = 15.0  # seconds, like the platform's default delivery timeout
USER_AGENT = "webhooks-cli-listen/0.1"


def signed_headers(secret: str, event_id: str, event_type: str, body: bytes
                   ) -> dict[str, str]:
    """The Standard Webhooks headers the platform sends, signed with ``secret``."""
    timestamp = int(time.time())
    return {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": event_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header([secret], event_id, timestamp, body),
        "webhook-attempt": "1",
        "webhook-event-type": event_type,
    }


def _check_secret(ctx: click.Context, param: click.Parameter, value: str | None
                  ) -> str | None:
    if value is not None:
        try:
            secret_key(value)
        except InvalidSecret as exc:
            raise click.BadParameter(str(exc)) from exc
    return value


@click.command()
@click.option("--forward-to", required=True, metavar="URL",
              help="Local URL to POST each event to, e.g. http://localhost:3000/hook.")
@click.option("--events", "type_", metavar="TYPE",
              help="Only these event types: order.shipped or order.* (default: all).")
@click.option("--secret", callback=_check_secret,
              help="Sign with this whsec_… secret instead of a fresh one per session.")
@click.option("--cursor", metavar="CURSOR",
              help="Start after this cursor (a stream id or next_cursor) instead of now.")
@click.option("--max-events", type=click.IntRange(min=1),
              help="Exit after forwarding this many events (for scripts).")
@pass_session
def listen(session: CliSession, forward_to: str, type_: str | None, secret: str | None,
           cursor: str | None, max_events: int | None) -> None:
    """Forward live events to a local URL, signed like real webhooks (like `stripe listen`)."""
    secret = secret or generate_secret()
    api = session.api()
    click.echo(f"Session signing secret: {secret}")
    sys.stdout.flush()

    def connected(again: bool) -> None:
        if again:
            click.echo("stream: reconnected, continuing after the last event", err=True)
        else:
            click.echo(f"Ready! Forwarding {type_ or 'all'} events to {forward_to} "
                       "(Ctrl-C to stop)")
            sys.stdout.flush()

    def reconnecting(reason: str) -> None:
        click.echo(f"stream: {reason}", err=True)

    forwarded = 0
    with httpx.Client(timeout=FORWARD_TIMEOUT, follow_redirects=False) as local:
        try:
            for envelope, raw in follow_events(api, {"type": type_}, cursor=cursor,
                                               on_connect=connected,
                                               on_reconnect=reconnecting):
                body = raw.encode()
                headers = signed_headers(secret, envelope["id"], envelope["type"], body)
                try:
                    answer = local.post(forward_to, content=body, headers=headers)
                    status = f"[{answer.status_code}]"
                except httpx.HTTPError as exc:
                    status = f"[error: {exc.__class__.__name__}: {exc}]"
                now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")
                click.echo(f"{now}  --> {envelope['type']:<28} {envelope['id']}  "
                           f"{forward_to} {status}")
                sys.stdout.flush()
                forwarded += 1
                if max_events is not None and forwarded >= max_events:
                    return
        except KeyboardInterrupt:
            click.echo(f"stopped after {forwarded} events", err=True)
