import pytest

from webhooks.clickhouse import (
    ClickHouseTarget,
    apply_migrations,
    clickhouse_reachable,
    create_clickhouse_client,
)
from webhooks.settings import Settings


def test_parse_urls() -> None:
    embedded = ClickHouseTarget.parse("chdb:///var/lib/ch?database=logs")
    assert embedded.embedded and embedded.path == "/var/lib/ch" and embedded.database == "logs"
    server = ClickHouseTarget.parse("https://u:p%40ss@ch.example:8443/events")
    assert (server.host, server.port, server.secure, server.username, server.password,
            server.database) == ("ch.example", 8443, True, "u", "p@ss", "events")
    assert ClickHouseTarget.parse("http://ch:8123").database == "webhooks"


@pytest.mark.parametrize("url", ["mysql://x/y", "http:///db", "chdb://", "http://h/bad-name;"])
def test_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError):
        ClickHouseTarget.parse(url)


def test_migrations_apply_once(settings: Settings) -> None:
    client = create_clickhouse_client(settings.clickhouse_url)
    assert clickhouse_reachable(client)
    first = apply_migrations(client, settings.retention_days)
    assert 1 in first
    assert apply_migrations(client, settings.retention_days) == []
    tables = {row[0] for row in client.query("SHOW TABLES").result_rows}
    assert {"events", "schema_migrations"} <= tables
