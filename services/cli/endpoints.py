"""``webhooks endpoints …``: subscribe URLs to events, change them, test them."""

from __future__ import annotations

import json
import time
from typing import Any

import click

from services.cli.client import CliSession, pass_session
from services.cli.output import Column, json_option, print_json, print_record, print_rows

VERIFY_WAIT = 60.0  # seconds `endpoints verify --wait` waits for the receiver's answer


def _status(endpoint: dict[str, Any]) -> str:
    """One word: what holds deliveries back, if anything (disabled first)."""
    verification = endpoint.get("verification") or {"state": "verified"}
    if endpoint.get("disabled"):
        return "disabled"
    if verification["state"] != "verified":
        return "unverified" if verification["state"] == "failed" else "verifying"
    return "paused" if endpoint.get("paused") else "enabled"


ENDPOINT_COLUMNS: list[Column] = [
    ("id", "id"), ("url", "url"), ("events", "events"), ("status", _status),
    ("ordered", "ordered"), ("description", "description"),
]
ENDPOINT_FIELDS = ("id", "url", "events", "description", "rate_limit", "headers", "filter",
                   "ordered", "paused", "paused_since", "verification", "disabled",
                   "disabled_reason", "warnings", "created", "updated")
FILTER_EXAMPLE = '{"data.object.status": "shipped", "data.object.amount": {"$gte": 1000}}'


@click.group()
def endpoints() -> None:
    """Manage the endpoints (URLs) that receive your webhooks."""


def _header_lines(endpoint: dict[str, Any]) -> list[str]:
    """``Name: value`` per custom header (secret values come masked from the API)."""
    return [f"{h['name']}: {h['value']}" + ("  (secret)" if h.get("secret") else "")
            for h in endpoint.get("headers") or []]


def _verification_line(endpoint: dict[str, Any]) -> str:
    """Where the URL verification stands, in words ("-" when none was asked for)."""
    verification = endpoint.get("verification")
    if not verification:
        return "-"
    state = verification["state"]
    if state == "pending":
        return f"pending (challenge sent {verification['requested_at']})"
    if state == "verified":
        return f"verified {verification.get('checked_at') or ''}".strip()
    return f"failed: {verification.get('error')}: {verification.get('reason')}"


def _print_endpoint(endpoint: dict[str, Any], as_json: bool,
                    fields: tuple[str, ...] = ENDPOINT_FIELDS) -> None:
    fields = (*fields, *(("tls",) if endpoint.get("tls") else ()),
              *(("secret",) if "secret" in endpoint else ()))
    print_record(endpoint, as_json, fields, lines={
        "headers": _header_lines(endpoint), "tls": _tls_lines(endpoint),
        "verification": [_verification_line(endpoint)],
        "warnings": list(endpoint.get("warnings") or [])})


# --client-cert, --client-key, --ca-bundle and --clear-tls collect the ``tls`` change in
# the context (the commands' parameters stay as they are): a dict of PEM texts, or None.
TLS = "endpoints.tls"


def tls_options(command: Any) -> Any:
    """TLS material for an https receiver; the API checks it (and never shows the key)."""
    for option in reversed([
        click.option("--client-cert", type=click.File("r"), expose_value=False,
                     callback=_tls_file, metavar="FILE",
                     help="PEM client certificate (chain) for a receiver that requires "
                          "mutual TLS; with --client-key. On update, TLS files replace the "
                          "TLS material: give each one to keep."),
        click.option("--client-key", type=click.File("r"), expose_value=False,
                     callback=_tls_file, metavar="FILE",
                     help="Its PEM private key, unencrypted (stored encrypted, never shown)."),
        click.option("--ca-bundle", type=click.File("r"), expose_value=False,
                     callback=_tls_file, metavar="FILE",
                     help="PEM CA certificates that the receiver's certificate must chain "
                          "to, instead of the system's (a private CA)."),
    ]):
        command = option(command)
    return command


def _tls_file(ctx: click.Context, param: click.Parameter, file: Any) -> None:
    if file is not None:
        if TLS in ctx.meta and ctx.meta[TLS] is None:
            raise click.UsageError("give TLS files or --clear-tls, not both")
        ctx.meta.setdefault(TLS, {})[param.name] = file.read()


def _clear_tls(ctx: click.Context, param: click.Parameter, clear: bool) -> None:
    if clear:
        if ctx.meta.get(TLS):
            raise click.UsageError("give TLS files or --clear-tls, not both")
        ctx.meta[TLS] = None


def _tls_lines(endpoint: dict[str, Any]) -> list[str]:
    tls = endpoint.get("tls") or {}
    return [*(["client certificate (key masked)"] if tls.get("client_cert") else []),
            *(["private CA bundle"] if tls.get("ca_bundle") else [])]


def _headers(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
             ) -> list[tuple[str, str]]:
    """``--header NAME=VALUE`` (repeated) as (name, value) pairs; the API checks the names
    and values themselves."""
    pairs = []
    for value in values:
        name, sep, text = value.partition("=")
        if not sep or not name.strip():
            raise click.BadParameter(f"{value!r} is not NAME=VALUE", ctx, param)
        pairs.append((name.strip(), text))
    return pairs


def _filter(ctx: click.Context, param: click.Parameter, value: str | None
            ) -> dict[str, Any] | None:
    """``--filter JSON`` or ``--filter @file.json`` (``@-``: standard input) as an object."""
    if value is None:
        return None
    text = value
    if value.startswith("@"):
        try:
            with click.open_file(value[1:]) as file:
                text = file.read()
        except OSError as exc:
            raise click.BadParameter(f"cannot read {value[1:]!r}: {exc.strerror}",
                                     ctx, param) from exc
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}", ctx, param) from exc
    if not isinstance(document, dict):
        raise click.BadParameter(f"must be a JSON object, e.g. '{FILTER_EXAMPLE}'", ctx, param)
    return document


def _custom_headers(plain: list[tuple[str, str]], secret: list[tuple[str, str]]
                    ) -> list[dict[str, Any]]:
    return [{"name": name, "value": value, "secret": hidden}
            for pairs, hidden in ((plain, False), (secret, True)) for name, value in pairs]


def delivery_options(command: Any) -> Any:
    """The delivery options create and update share: custom headers, payload filter."""
    for option in reversed([
        click.option("--header", "header", multiple=True, callback=_headers,
                     metavar="NAME=VALUE",
                     help="A custom header sent with every delivery, e.g. X-Team=payments. "
                          "Repeat for several."),
        click.option("--secret-header", multiple=True, callback=_headers,
                     metavar="NAME=VALUE",
                     help="A custom header whose value is secret: masked wherever it is "
                          "shown. Repeat for several."),
        click.option("--filter", "filter_", callback=_filter, metavar="JSON|@FILE",
                     help="Payload filter: deliver only events whose fields match, e.g. "
                          f"'{FILTER_EXAMPLE}'; @file.json reads it from a file."),
    ]):
        command = option(command)
    return command


ordered_option = click.option(
    "--ordered/--unordered", default=None,
    help="Deliver events one at a time in the order they were published (a failing one "
         "holds the later ones), or concurrently (the default).")


@endpoints.command("create")
@click.option("--url", required=True, help="Where to POST the webhooks.")
@click.option("--events", "events_", multiple=True, default=("*",), show_default=True,
              help="Event types to subscribe to: order.shipped, order.* or *. Repeat "
                   "for several.")
@click.option("--description", default="", help="A note for people.")
@click.option("--secret", help="A whsec_… signing secret; generated when omitted.")
@click.option("--rate-limit", type=click.IntRange(min=1),
              help="At most this many deliveries per second.")
@delivery_options
@tls_options
@ordered_option
@click.option("--paused", is_flag=True, help="Create it paused: events are held, not sent, "
                                             "until `endpoints resume`.")
@click.option("--verify", is_flag=True,
              help="Verify the URL first: it gets events only once the receiver answered "
                   'a webhook.verification request with {"challenge": "<data.challenge>"}.')
@click.option("--idempotency-key", help="Sent as Idempotency-Key: a retry returns the "
                                        "endpoint the first request created.")
@json_option
@pass_session
def create(session: CliSession, url: str, events_: tuple[str, ...], description: str,
           secret: str | None, rate_limit: int | None, header: list[tuple[str, str]],
           secret_header: list[tuple[str, str]], filter_: dict[str, Any] | None,
           ordered: bool | None, paused: bool, verify: bool, idempotency_key: str | None,
           as_json: bool) -> None:
    """Create an endpoint; prints its id and signing secret."""
    body: dict[str, Any] = {"url": url, "events": list(events_), "description": description}
    body.update({name: True for name, on in (("ordered", ordered), ("paused", paused),
                                             ("verify", verify)) if on})
    if secret is not None:
        body["secret"] = secret
    if rate_limit is not None:
        body["rate_limit"] = rate_limit
    if header or secret_header:
        body["headers"] = _custom_headers(header, secret_header)
    if filter_ is not None:
        body["filter"] = filter_
    if click.get_current_context().meta.get(TLS):
        body["tls"] = click.get_current_context().meta[TLS]
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
    _print_endpoint(session.api().post("/v1/endpoints", body, headers=headers), as_json)


@endpoints.command("list")
@click.option("--url", help="Only endpoints whose URL contains this text (any case).")
@click.option("--disabled/--enabled", "disabled", default=None,
              help="Only disabled, or only enabled, endpoints.")
@click.option("--limit", type=click.IntRange(min=1),
              help="At most this many endpoints (default: every one, page after page).")
@json_option
@pass_session
def list_(session: CliSession, url: str | None, disabled: bool | None, limit: int | None,
          as_json: bool) -> None:
    """List your endpoints, oldest first."""
    params = {"url": url, "disabled": None if disabled is None else str(disabled).lower()}
    rows = list(session.api().paginate("/v1/endpoints", params, limit))
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
    _print_endpoint(endpoint, False)
    for secret in endpoint.get("secrets", []):
        click.echo(f"secret: {secret['secret']}  (expires: {secret.get('expires') or 'never'})")


@endpoints.command("update")
@click.argument("endpoint_id")
@click.option("--url", help="New target URL.")
@click.option("--events", "events_", multiple=True,
              help="Replace the subscribed event types (repeat for several).")
@click.option("--description", help="New description.")
@click.option("--rate-limit", type=click.IntRange(min=1), help="New deliveries per second.")
@delivery_options
@ordered_option
@click.option("--clear-headers", is_flag=True, help="Remove every custom header.")
@click.option("--clear-filter", is_flag=True, help="Remove the payload filter.")
@tls_options
@click.option("--clear-tls", is_flag=True, expose_value=False, callback=_clear_tls,
              help="Remove the TLS material (client certificate, key, CA bundle).")
@json_option
@pass_session
def update(session: CliSession, endpoint_id: str, url: str | None, events_: tuple[str, ...],
           description: str | None, rate_limit: int | None, header: list[tuple[str, str]],
           secret_header: list[tuple[str, str]], filter_: dict[str, Any] | None,
           ordered: bool | None, clear_headers: bool, clear_filter: bool,
           as_json: bool) -> None:
    """Change an endpoint: only the options given change. --header and --secret-header
    replace every custom header: give each one to keep, secret values included."""
    given_headers = bool(header or secret_header)
    if given_headers and clear_headers:
        raise click.UsageError("give --header/--secret-header or --clear-headers, not both")
    if filter_ is not None and clear_filter:
        raise click.UsageError("give --filter or --clear-filter, not both")
    headers = _custom_headers(header, secret_header) if given_headers else None
    changes: dict[str, Any] = {"url": url, "events": list(events_) or None,
                               "description": description, "rate_limit": rate_limit,
                               "headers": [] if clear_headers else headers,
                               "filter": filter_, "ordered": ordered}
    changes = {name: value for name, value in changes.items() if value is not None}
    if clear_filter:
        changes["filter"] = None  # null removes it
    if TLS in click.get_current_context().meta:  # the files given (all again), or None
        changes["tls"] = click.get_current_context().meta[TLS]
    if not changes:
        raise click.UsageError("nothing to change: give --url, --events, --description, "
                               "--rate-limit, --header, --secret-header, --clear-headers, "
                               "--filter, --clear-filter or --ordered/--unordered")
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


@endpoints.command("pause")
@click.argument("endpoint_id")
@json_option
@pass_session
def pause(session: CliSession, endpoint_id: str, as_json: bool) -> None:
    """Pause an endpoint: events are held, not sent and not dropped, until `resume`."""
    _patch(session, endpoint_id, {"paused": True}, as_json)


@endpoints.command("resume")
@click.argument("endpoint_id")
@json_option
@pass_session
def resume(session: CliSession, endpoint_id: str, as_json: bool) -> None:
    """Resume a paused endpoint: everything held goes out (in order, if ordered)."""
    _patch(session, endpoint_id, {"paused": False}, as_json)


@endpoints.command("verify")
@click.argument("endpoint_id")
@click.option("--wait", is_flag=True, help=f"Wait (up to {VERIFY_WAIT:g} s) for the answer; "
                                           "exit 1 unless the endpoint is verified.")
@json_option
@pass_session
def verify(session: CliSession, endpoint_id: str, wait: bool, as_json: bool) -> None:
    """Send a new verification challenge to an endpoint whose verification is pending or
    failed; it gets events once its receiver echoes the challenge."""
    api = session.api()
    endpoint = api.post(f"/v1/endpoints/{endpoint_id}/verify")
    deadline = time.monotonic() + VERIFY_WAIT
    while wait and endpoint["verification"]["state"] == "pending" \
            and time.monotonic() < deadline:
        time.sleep(0.5)
        endpoint = api.get(f"/v1/endpoints/{endpoint_id}")
    if as_json:
        print_json(endpoint)
    else:
        click.echo(f"{endpoint_id}: {_verification_line(endpoint)}")
    if wait and endpoint["verification"]["state"] != "verified":
        raise click.exceptions.Exit(1)


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
