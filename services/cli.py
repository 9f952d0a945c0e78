"""The ``webhooks`` command: run a service, manage topics and migrations, the local stack."""

from __future__ import annotations

import argparse
import importlib
import logging

from webhooks.settings import get_settings

SERVICE_NAMES = ("ingest", "fanout", "eventlog")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="webhooks", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run one service in the foreground")
    serve.add_argument("service", choices=SERVICE_NAMES)
    commands.add_parser("create-topics", help="create missing Kafka topics (idempotent)")
    commands.add_parser("migrate", help="apply ClickHouse migrations (idempotent)")
    commands.add_parser("up", help="start local Kafka and all services in the background")
    commands.add_parser("down", help="stop what `up` started")
    args = parser.parse_args(argv)

    settings = get_settings()
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "serve":
        # Each service package exposes main.run(settings); the CLI is the only place
        # that knows all three.
        importlib.import_module(f"services.{args.service}.main").run(settings)
    elif args.command == "create-topics":
        from webhooks.topics import ensure_topics

        created = ensure_topics(settings)
        print("created: " + (", ".join(created) or "nothing, all topics exist"))
    elif args.command == "migrate":
        from services.eventlog.clickhouse import apply_migrations, create_clickhouse_client

        applied = apply_migrations(create_clickhouse_client(settings.clickhouse_url),
                                   settings.retention_days)
        print("applied: " + (", ".join(map(str, applied)) or "nothing, schema is current"))
    elif args.command == "up":
        from services.localdev import stack as localstack

        localstack.up(settings)
    elif args.command == "down":
        from services.localdev import stack as localstack

        localstack.down()


if __name__ == "__main__":
    main()
