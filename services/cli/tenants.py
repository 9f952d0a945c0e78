"""``webhooks tenants …`` and ``webhooks keys …``: the admin commands, over ``/v1/tenants``.

They need an admin key (one of tenant ``*``); any other key gets the API's 403 naming
the ``admin`` scope it lacks. Tenant and key ids are checked against the shared record
schemas before they go into a URL. A key's secret is printed once, at creation: the
platform keeps only its hash.
"""

from __future__ import annotations

from typing import Any

import click

from services.cli.client import CliSession, pass_session
from services.cli.output import Column, json_option, print_json, print_record, print_rows
from services.cli.params import DURATION, KEY_ID, KEY_OWNER, SCOPES, TENANT_ID

ADMIN_TENANT = "*"  # the key owner of admin keys
ERASE_TIMEOUT = 120.0  # seconds: erasure waits for the sink, then deletes rows
TENANT_COLUMNS: list[Column] = [
    ("id", "id"), ("name", "name"),
    ("status", lambda t: "disabled" if t.get("disabled") else "enabled"),
    ("metadata", "metadata"), ("created", "created"),
]
TENANT_FIELDS = ("id", "name", "metadata", "disabled", "created", "updated")
KEY_COLUMNS: list[Column] = [
    ("id", "id"), ("prefix", "prefix"), ("scopes", "scopes"), ("description", "description"),
    ("created", "created"), ("last used", "last_used"), ("expires", "expires"),
]
KEY_FIELDS = ("id", "tenant", "prefix", "scopes", "description", "created", "expires")


def _metadata(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
              ) -> dict[str, str] | None:
    """``--metadata k=v`` (repeated) as a dict; None when not given."""
    if not values:
        return None
    labels: dict[str, str] = {}
    for value in values:
        key, sep, text = value.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{value!r} is not key=value", ctx, param)
        if key in labels:
            raise click.BadParameter(f"key {key!r} given twice", ctx, param)
        labels[key] = text
    return labels


metadata_option = click.option(
    "--metadata", multiple=True, callback=_metadata, metavar="KEY=VALUE",
    help="A free-form label, e.g. plan=pro. Repeat for several.")


@click.group()
def tenants() -> None:
    """Admin: the platform's tenants (customers). Needs an admin key."""


@tenants.command("list")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True,
              help="At most this many tenants.")
@click.option("--all", "all_", is_flag=True, help="Every tenant (no --limit).")
@click.option("--cursor", help="Continue after this tenant id (the last one listed).")
@json_option
@pass_session
def list_tenants(session: CliSession, limit: int, all_: bool, cursor: str | None,
                 as_json: bool) -> None:
    """List tenants by id (erased ones are gone)."""
    rows = list(session.api().paginate("/v1/tenants", {"cursor": cursor},
                                       None if all_ else limit))
    print_rows(rows, TENANT_COLUMNS, as_json, empty="no tenants")


@tenants.command("get")
@click.argument("tenant_id", type=TENANT_ID)
@json_option
@pass_session
def get_tenant(session: CliSession, tenant_id: str, as_json: bool) -> None:
    """Show one tenant."""
    print_record(session.api().get(f"/v1/tenants/{tenant_id}"), as_json, TENANT_FIELDS)


@tenants.command("create")
@click.argument("tenant_id", type=TENANT_ID)
@click.option("--name", default="", help="A display name.")
@metadata_option
@json_option
@pass_session
def create_tenant(session: CliSession, tenant_id: str, name: str,
                  metadata: dict[str, str] | None, as_json: bool) -> None:
    """Create a tenant: TENANT_ID is the id its events carry. Give it keys with
    `webhooks keys create TENANT_ID`."""
    body = {"id": tenant_id, "name": name, "metadata": metadata or {}}
    print_record(session.api().post("/v1/tenants", body), as_json, TENANT_FIELDS)


@tenants.command("update")
@click.argument("tenant_id", type=TENANT_ID)
@click.option("--name", help="New display name.")
@click.option("--metadata", multiple=True, callback=_metadata, metavar="KEY=VALUE",
              help="Replace the metadata with these labels (repeat for several; give "
                   "every label to keep).")
@click.option("--clear-metadata", is_flag=True, help="Remove every metadata label.")
@click.option("--disable/--enable", "disabled", default=None,
              help="Disable: refuse the tenant's events at ingest (403), keeping all its "
                   "data and keys. Enable: accept them again.")
@json_option
@pass_session
def update_tenant(session: CliSession, tenant_id: str, name: str | None,
                  metadata: dict[str, str] | None, clear_metadata: bool,
                  disabled: bool | None, as_json: bool) -> None:
    """Change a tenant: only the options given change."""
    if metadata is not None and clear_metadata:
        raise click.UsageError("give --metadata or --clear-metadata, not both")
    changes: dict[str, Any] = {"name": name, "disabled": disabled,
                               "metadata": {} if clear_metadata else metadata}
    changes = {field: value for field, value in changes.items() if value is not None}
    if not changes:
        raise click.UsageError("nothing to change: give --name, --metadata, "
                               "--clear-metadata, --disable or --enable")
    print_record(session.api().request("PATCH", f"/v1/tenants/{tenant_id}", json=changes),
                 as_json, TENANT_FIELDS)


@tenants.command("delete")
@click.argument("tenant_id", type=TENANT_ID)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@json_option
@pass_session
def delete_tenant(session: CliSession, tenant_id: str, yes: bool, as_json: bool) -> None:
    """Erase a tenant for good: its keys stop working, its events are refused, and its
    events, attempts, DLQ entries and endpoints are deleted. Prints what was removed and
    what remains until the topics' retention passes."""
    if not yes:
        click.confirm(f"Erase tenant {tenant_id} and all its data? This cannot be undone",
                      abort=True)
    erasure = session.api().request("DELETE", f"/v1/tenants/{tenant_id}",
                                    timeout=ERASE_TIMEOUT)
    if as_json:
        print_json(erasure)
        return
    click.echo(f"erased tenant {erasure['tenant']}")
    click.echo(f"deleted rows: {_counts(erasure.get('rows_deleted', {}))}")
    click.echo(f"tombstoned records: {_counts(erasure.get('tombstoned', {}))}")
    remaining = erasure.get("remaining") or []
    if remaining:
        click.echo("remains until retention removes it:")
        for item in remaining:
            click.echo(f"  - {item}")


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} {count}" for name, count in counts.items()) or "none"


@click.group()
def keys() -> None:
    """Admin: API keys of a tenant (or '*', admin keys). Needs an admin key."""


@keys.command("create")
@click.argument("tenant_id", type=KEY_OWNER)
@click.option("--scope", "scopes", multiple=True, type=click.Choice(SCOPES),
              help="What the key may do; repeat for several. Tenant keys: publish, read, "
                   "manage (default: all three). Admin keys (TENANT_ID '*'): admin "
                   "(the default).")
@click.option("--description", default="", help="A note for people: who or what uses it.")
@click.option("--expires-in", type=DURATION,
              help="The key stops working after this long (30d, 12h); default: never.")
@json_option
@pass_session
def create_key(session: CliSession, tenant_id: str, scopes: tuple[str, ...],
               description: str, expires_in: float | None, as_json: bool) -> None:
    """Create an API key for TENANT_ID ('*': an admin key). Prints the key once: it is
    not stored and cannot be shown again."""
    body: dict[str, Any] = {"description": description}
    if scopes:
        body["scopes"] = list(scopes)
    elif tenant_id == ADMIN_TENANT:
        body["scopes"] = ["admin"]
    if expires_in is not None:
        body["expires_in"] = expires_in
    created = session.api().post(f"/v1/tenants/{tenant_id}/keys", body)
    if as_json:
        print_json(created)
    else:
        print_record(created, False, [*KEY_FIELDS, "key"])
    click.echo("Store the key now: it is shown only this once.", err=True)


@keys.command("list")
@click.argument("tenant_id", type=KEY_OWNER)
@json_option
@pass_session
def list_keys(session: CliSession, tenant_id: str, as_json: bool) -> None:
    """List the API keys of TENANT_ID ('*': admin keys), oldest first, without secrets.
    Last-used times are approximate (within a minute or two)."""
    rows = session.api().get(f"/v1/tenants/{tenant_id}/keys")["data"]
    print_rows(rows, KEY_COLUMNS, as_json,
               empty="no managed keys (keys from WEBHOOKS_API_KEYS are not listed)")


@keys.command("revoke")
@click.argument("tenant_id", type=KEY_OWNER)
@click.argument("key_id", type=KEY_ID)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_session
def revoke_key(session: CliSession, tenant_id: str, key_id: str, yes: bool) -> None:
    """Revoke a key of TENANT_ID: it stops working on every replica within seconds."""
    if not yes:
        click.confirm(f"Revoke key {key_id} of {tenant_id}? Whoever uses it is locked out",
                      abort=True)
    session.api().request("DELETE", f"/v1/tenants/{tenant_id}/keys/{key_id}")
    click.echo(f"revoked {key_id}")
