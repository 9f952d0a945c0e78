"""Operator commands: run a service, set up Kafka topics and ClickHouse, the local stack,
re-encrypt the endpoint secrets.

These are what the Helm chart and ``make up`` run (``webhooks serve ingest``, …); they
import the services themselves, lazily, so that the tenant commands do not.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import click

from webhooks.settings import Settings, get_settings

SERVICE_NAMES = ("ingest", "fanout", "eventlog")


def _settings() -> Settings:
    """The service settings (``WEBHOOKS_*``), with logging configured from them."""
    settings = get_settings()
    from webhooks.observability import configure_logging  # lazily: see the module docstring

    configure_logging(settings.log_level, settings.log_format)
    return settings


@click.command()
@click.argument("service", type=click.Choice(SERVICE_NAMES))
def serve(service: str) -> None:
    """Run one service in the foreground."""
    settings = _settings()
    from webhooks.settings import StartRefused

    # Each service package exposes main.run(settings); the CLI is the only place
    # that knows all three.
    try:
        importlib.import_module(f"services.{service}.main").run(settings)
    except StartRefused as exc:  # one clear line and exit 1, not a traceback
        raise click.ClickException(f"{service} refuses to start: {exc}") from None


@click.command("create-topics")
def create_topics() -> None:
    """Create missing Kafka topics (idempotent)."""
    from webhooks.topics import ensure_topics

    created = ensure_topics(_settings())
    click.echo("created: " + (", ".join(created) or "nothing, all topics exist"))


@click.command()
def migrate() -> None:
    """Apply ClickHouse migrations (idempotent)."""
    from services.eventlog.clickhouse import (
        EmbeddedEngineMissing,
        apply_migrations,
        create_clickhouse_client,
    )

    settings = _settings()
    try:
        client = create_clickhouse_client(settings.clickhouse_url)
    except EmbeddedEngineMissing as exc:
        raise click.ClickException(f"migrate: {exc}") from None
    applied = apply_migrations(client, settings.retention_days)
    click.echo("applied: " + (", ".join(map(str, applied)) or "nothing, schema is current"))


STATE_DIR = click.option(
    "--state-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="Keep the stack's .data/ and .run/ here instead of in the checkout "
         "(a second stack beside a running one, as the tests do).")


@click.command()
@STATE_DIR
def up(state_dir: Path | None) -> None:
    """Start local Kafka and all services in the background."""
    from services.localdev import stack as localstack

    folders = localstack.StackFolders(state_dir) if state_dir else localstack.StackFolders()
    localstack.up(_settings(), folders)


@click.command()
@STATE_DIR
def down(state_dir: Path | None) -> None:
    """Stop what `up` started."""
    from services.localdev import stack as localstack

    _settings()
    localstack.down(localstack.StackFolders(state_dir) if state_dir else localstack.StackFolders())


@click.command("rotate-secrets-key")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
def rotate_secrets_key(as_json: bool) -> None:
    """Re-encrypt every endpoint's signing secrets with the first key of
    WEBHOOKS_SECRETS_KEY (unencrypted ones of an older install too). Idempotent and safe
    while the services run; exits 1 if an endpoint could not be re-encrypted."""
    from dataclasses import asdict

    from services.cli.secrets_key import rotate_secrets_key as rotate
    from webhooks.endpoint_secrets import SecretsKeyRefused

    try:
        report = rotate(_settings())
    except SecretsKeyRefused as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps(asdict(report), indent=2) if as_json else "\n".join(report.lines()))
    if report.failed:
        raise click.ClickException(f"{len(report.failed)} endpoint(s) not re-encrypted: "
                                   "WEBHOOKS_SECRETS_KEY must also hold their key(s)")


OPERATOR_COMMANDS = (serve, create_topics, migrate, up, down, rotate_secrets_key)
