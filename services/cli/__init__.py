"""The ``webhooks`` command.

Operators run and set up the platform (``serve``, ``create-topics``, ``migrate``, ``up``,
``down``, ``rotate-secrets-key``: :mod:`services.cli.operator`). Tenants use it over the
HTTP APIs only, with their API key (:mod:`services.cli.endpoints`,
:mod:`~services.cli.events`, :mod:`~services.cli.dlq`, :mod:`~services.cli.listen`), and
admins manage tenants and keys the same way (:mod:`~services.cli.tenants`); those modules
import nothing of the services, only the shared contracts of ``webhooks/`` (signing,
envelope times, record schemas).
"""

from __future__ import annotations

from pathlib import Path

import click

from services.cli.client import CliSession
from services.cli.dlq import dlq
from services.cli.endpoints import endpoints
from services.cli.events import attempts, events, recover, redeliver, send
from services.cli.listen import listen
from services.cli.operator import OPERATOR_COMMANDS
from services.cli.tenants import keys, tenants

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"],
                               "max_content_width": 100})
@click.option("--api-key", envvar="WEBHOOKS_API_KEY", metavar="KEY",
              help="Your API key [env WEBHOOKS_API_KEY; config api_key].")
@click.option("--ingest-url", envvar="WEBHOOKS_INGEST_URL", metavar="URL",
              help="Ingest API [env WEBHOOKS_INGEST_URL; default http://127.0.0.1:8081].")
@click.option("--eventlog-url", envvar="WEBHOOKS_EVENTLOG_URL", metavar="URL",
              help="Eventlog API [env WEBHOOKS_EVENTLOG_URL; default http://127.0.0.1:8082].")
@click.option("--tenant", envvar="WEBHOOKS_TENANT",
              help="Admin keys only: the tenant to act for [env WEBHOOKS_TENANT].")
@click.option("--config", "config_path", envvar="WEBHOOKS_CONFIG",
              type=click.Path(dir_okay=False, path_type=Path),
              help="TOML file with api_key, ingest_url, eventlog_url, tenant "
                   "[default ~/.config/webhooks/config.toml].")
@click.pass_context
def main(ctx: click.Context, api_key: str | None, ingest_url: str | None,
         eventlog_url: str | None, tenant: str | None, config_path: Path | None) -> None:
    """kafka-webhooks: run the platform, or use it as a tenant.

    \b
    Operators:  serve, create-topics, migrate, up, down, rotate-secrets-key
    Tenants:    endpoints, send, events, attempts, redeliver, recover, dlq, listen
    Admins:     tenants, keys (and --tenant to act for one tenant)

    Flags win over environment variables, which win over the config file.
    """
    session = CliSession({"api_key": api_key, "ingest_url": ingest_url,
                          "eventlog_url": eventlog_url, "tenant": tenant}, config_path)
    ctx.obj = session
    ctx.call_on_close(session.close)


for _command in (*OPERATOR_COMMANDS, endpoints, send, events, attempts, redeliver, recover,
                 dlq, listen, tenants, keys):
    main.add_command(_command)
