import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from clickhouse_connect.driver.client import Client

from services.eventlog.clickhouse import (
    RETENTION_TABLES,
    ClickHouseTarget,
    EmbeddedEngineMissing,
    apply_migrations,
    apply_retention,
    clickhouse_reachable,
    create_clickhouse_client,
    require_engine,
    retention_days_of,
)
from services.localdev.kafka_broker import REPO_ROOT
from tests.support.backends import with_database
from tests.support.eventlog import eventually
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


def show_create(client: Client, table: str) -> str:
    return client.query(f"SHOW CREATE TABLE {table}").result_rows[0][0]


def event_ids(client: Client) -> set[str]:
    return {row[0] for row in client.query("SELECT id FROM events").result_rows}


def test_a_changed_retention_reaches_existing_tables(clickhouse_base_url: str) -> None:
    """Migration 0001 sets the TTL only when it creates the tables; a later start with
    another WEBHOOKS_RETENTION_DAYS must still change it (and expire what it now should)."""
    client = create_clickhouse_client(
        with_database(clickhouse_base_url, f"r{uuid.uuid4().hex[:10]}"))
    default = Settings.model_fields["retention_days"].default
    assert default == 30
    assert 1 in apply_migrations(client, default)
    assert retention_days_of(client) == {table: 30 for table in RETENTION_TABLES}
    client.command(
        "INSERT INTO events (tenant, kafka_partition, kafka_offset, id, type, api_version, "
        "created, envelope, inserted) VALUES "
        "('acme', 0, 0, 'evt_10_days_old', 'a.b', 'v', now64(6), '{}', now() - INTERVAL 10 DAY), "
        "('acme', 0, 1, 'evt_new', 'a.b', 'v', now64(6), '{}', now())")
    assert event_ids(client) == {"evt_10_days_old", "evt_new"}  # within 30 days

    assert apply_migrations(client, 7) == []  # a restart with retention 7: no new version...
    for table in RETENTION_TABLES:  # ...but the TTL follows the setting
        assert "TTL toDateTime(inserted) + toIntervalDay(7)" in show_create(client, table)
    eventually(lambda: event_ids(client) == {"evt_new"})  # the old row is now past it
    assert apply_retention(client, 7) == []  # idempotent: nothing left to change
    assert apply_retention(client, 30) == list(RETENTION_TABLES)
    assert retention_days_of(client) == {table: 30 for table in RETENTION_TABLES}


def test_superseded_endpoint_versions_are_merged_away(clickhouse_base_url: str) -> None:
    """Old versions of a record may hold secrets under a retired key (or plain ones from
    before encryption): parts older than an hour are merged, which drops them. The same
    setting at one second shows what it does where the merge selector alone would not
    (a large part beside a small one)."""
    client = create_clickhouse_client(
        with_database(clickhouse_base_url, f"m{uuid.uuid4().hex[:10]}"))
    apply_migrations(client)
    assert "min_age_to_force_merge_seconds = 3600" in show_create(client, "endpoints")
    client.command("ALTER TABLE endpoints MODIFY SETTING min_age_to_force_merge_seconds = 1")
    client.command("INSERT INTO endpoints (id, kafka_partition, kafka_offset, tenant, deleted, "
                   "record) SELECT concat('ep_', toString(number)), 0, number, 'acme', 0, "
                   "repeat('x', 200) FROM numbers(100000)")
    client.command("INSERT INTO endpoints (id, kafka_partition, kafka_offset, tenant, deleted, "
                   "record) VALUES ('ep_5', 0, 100000, 'acme', 0, 'the new version')")
    eventually(lambda: client.query("SELECT count() FROM endpoints WHERE id = 'ep_5'"
                                    ).result_rows[0][0] == 1, timeout=60)
    assert client.query("SELECT record FROM endpoints WHERE id = 'ep_5'").result_rows == [
        ("the new version",)]


def test_a_chdb_url_without_the_engine_is_refused_naming_the_full_image(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The -slim image has no chdb-core: a chdb:// URL stops the start with what to run
    instead; a server URL does not need the engine at all."""
    monkeypatch.setitem(sys.modules, "chdb", None)  # as if not installed
    url = f"chdb://{tmp_path / 'clickhouse'}"
    with pytest.raises(EmbeddedEngineMissing) as refused:
        create_clickhouse_client(url)
    message = str(refused.value)
    assert "full image" in message and "kafka-webhooks:dev-slim" in message
    assert "http(s)://" in message
    assert not (tmp_path / "clickhouse").exists()
    require_engine("http://clickhouse:8123/webhooks")  # server mode: nothing to check


@pytest.mark.parametrize("command", [["serve", "eventlog"], ["migrate"]])
def test_the_commands_refuse_a_chdb_url_without_the_engine_in_one_line(
        tmp_path: Path, command: list[str]) -> None:
    """`webhooks serve eventlog` and `webhooks migrate` as on the -slim image: exit 1 with the
    message at once (before reading Kafka), no traceback."""
    hide_chdb = "import sys; sys.modules['chdb'] = None; from services.cli import main; main()"
    env = {**os.environ, "WEBHOOKS_CLICKHOUSE_URL": f"chdb://{tmp_path / 'clickhouse'}",
           "WEBHOOKS_KAFKA_BOOTSTRAP": "127.0.0.1:9", "WEBHOOKS_SECRETS_KEY": "",
           "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run([sys.executable, "-c", hide_chdb, *command], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Error: " in done.stderr and "the full image" in done.stderr
    assert "Traceback" not in done.stderr
