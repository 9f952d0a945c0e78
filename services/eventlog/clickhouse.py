"""ClickHouse client factory (embedded chDB or a server) and versioned SQL migrations.

``WEBHOOKS_CLICKHOUSE_URL`` picks the engine:

- ``chdb:///abs/path`` or ``chdb://relative/path`` opens ClickHouse embedded in this
  process (chdb-core). Only one process may open a path, so the eventlog sink and API
  share one process in this mode. ``?database=name`` selects the database. chdb-core is
  the ``embedded`` extra: the full image has it, the -slim image does not, and without it
  such a URL is refused at start (:class:`EmbeddedEngineMissing`). Nothing imports chdb
  (nor the pandas, numpy and pyarrow it loads) until a chdb URL is opened.
- ``http(s)://user:password@host:8123/database`` talks to a ClickHouse server.
"""

from __future__ import annotations

import importlib.util
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from string import Template
from urllib.parse import parse_qs, unquote, urlsplit

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from webhooks.settings import StartRefused

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
DEFAULT_DATABASE = "webhooks"
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Tables whose rows expire after WEBHOOKS_RETENTION_DAYS (TTL on `inserted`, see 0001, 0003).
RETENTION_TABLES = ("events", "attempts", "dlq")
# How ClickHouse shows that TTL in system.tables.engine_full once it is stored.
_RETENTION_TTL = re.compile(r"\bTTL toDateTime\(inserted\) \+ toIntervalDay\((\d+)\)")


class EmbeddedEngineMissing(StartRefused):
    """A chdb:// URL where chdb-core is not installed (the -slim image)."""


@dataclass(frozen=True)
class ClickHouseTarget:
    """A parsed ``WEBHOOKS_CLICKHOUSE_URL``."""

    embedded: bool
    database: str
    path: str = ""
    host: str = ""
    port: int = 8123
    secure: bool = False
    username: str = "default"
    password: str = ""

    @classmethod
    def parse(cls, url: str) -> ClickHouseTarget:
        parts = urlsplit(url)
        query = parse_qs(parts.query)
        if parts.scheme == "chdb":
            path = unquote(parts.netloc + parts.path)
            if not path:
                raise ValueError("chdb URL needs a path, e.g. chdb:///var/lib/webhooks/clickhouse")
            database = query.get("database", [DEFAULT_DATABASE])[0]
            target = cls(embedded=True, database=database, path=str(Path(path).resolve()))
        elif parts.scheme in ("http", "https"):
            if not parts.hostname:
                raise ValueError(f"ClickHouse URL has no host: {url!r}")
            secure = parts.scheme == "https"
            target = cls(
                embedded=False,
                database=parts.path.strip("/") or DEFAULT_DATABASE,
                host=parts.hostname,
                port=parts.port or (8443 if secure else 8123),
                secure=secure,
                username=unquote(parts.username or "default"),
                password=unquote(parts.password or ""),
            )
        else:
            raise ValueError(
                f"unsupported ClickHouse URL scheme {parts.scheme!r}: use chdb or http(s)")
        if not _IDENTIFIER.match(target.database):
            raise ValueError(f"invalid ClickHouse database name {target.database!r}")
        return target


def create_clickhouse_client(url: str, create_database: bool = True) -> Client:
    """A clickhouse-connect client for ``url`` whose current database exists."""
    target = ClickHouseTarget.parse(url)
    if target.embedded:
        require_engine(url)
        Path(target.path).mkdir(parents=True, exist_ok=True)

        def connect(database: str | None) -> Client:
            return clickhouse_connect.get_client(interface="chdb", path=target.path,
                                                 database=database)
    else:

        def connect(database: str | None) -> Client:
            return clickhouse_connect.get_client(
                host=target.host, port=target.port, secure=target.secure,
                username=target.username, password=target.password, database=database or "",
                # No session: API threads share a client, and one session refuses
                # concurrent queries.
                autogenerate_session_id=False,
            )

    if create_database:
        bootstrap = connect(None)
        bootstrap.command(f"CREATE DATABASE IF NOT EXISTS {target.database}")
        if not target.embedded:
            bootstrap.close()
    return connect(target.database)


def require_engine(url: str) -> None:
    """Raise :class:`EmbeddedEngineMissing` when ``url`` is a chdb URL and chdb-core cannot
    be imported here (checked, not imported: a server URL never loads it)."""
    if ClickHouseTarget.parse(url).embedded and importlib.util.find_spec("chdb") is None:
        raise EmbeddedEngineMissing(
            "WEBHOOKS_CLICKHOUSE_URL is a chdb:// URL, which runs ClickHouse embedded in "
            "this process, but the embedded engine (chdb-core) is not installed: this is the "
            "-slim image (or an install without the `embedded` extra). Run the full image "
            "instead, the same tag without -slim (e.g. kafka-webhooks:dev, not "
            "kafka-webhooks:dev-slim; the Helm chart picks it for clickhouse.mode=embedded), "
            "or point WEBHOOKS_CLICKHOUSE_URL at a ClickHouse server (http(s)://…)")


def clickhouse_reachable(client: Client) -> bool:
    """True when a trivial query succeeds."""
    try:
        client.query("SELECT 1")
        return True
    except Exception:  # any driver or network error means "not ready"
        return False


def _migration_files() -> list[tuple[int, Path]]:
    files = []
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        version = int(path.name.split("_", 1)[0])
        files.append((version, path))
    return files


def _statements(sql: str) -> list[str]:
    lines = [line for line in sql.splitlines() if not line.strip().startswith("--")]
    return [stmt.strip() for stmt in "\n".join(lines).split(";") if stmt.strip()]


def apply_migrations(client: Client, retention_days: int = 30) -> list[int]:
    """Apply every migration in ``webhooks/migrations`` not yet recorded, then bring the
    retention TTLs to ``retention_days`` (:func:`apply_retention`); return the versions
    applied.

    Statements must be idempotent (``IF NOT EXISTS``): two processes starting at once
    may both apply a version, and ClickHouse has no transactional DDL.
    """
    client.command(
        "CREATE TABLE IF NOT EXISTS schema_migrations "
        "(version UInt32, name String, applied DateTime64(3, 'UTC') DEFAULT now64(3)) "
        "ENGINE = ReplacingMergeTree ORDER BY version"
    )
    done = {row[0] for row in client.query("SELECT version FROM schema_migrations").result_rows}
    applied = []
    for version, path in _migration_files():
        if version in done:
            continue
        sql = Template(path.read_text()).substitute(retention_days=int(retention_days))
        for statement in _statements(sql):
            client.command(statement)
        client.insert("schema_migrations", [[version, path.name]], column_names=["version", "name"])
        log.info("applied ClickHouse migration %s", path.name)
        applied.append(version)
    apply_retention(client, retention_days)
    return applied


def retention_days_of(client: Client) -> dict[str, int | None]:
    """Per table of :data:`RETENTION_TABLES`, the retention its TTL has now (None: no TTL
    of the expected form)."""
    rows = client.query(
        "SELECT name, engine_full FROM system.tables "
        "WHERE database = currentDatabase() AND name IN {tables:Array(String)}",
        parameters={"tables": list(RETENTION_TABLES)}).result_rows
    engines = dict(rows)
    days: dict[str, int | None] = {}
    for name in RETENTION_TABLES:  # in this order, whatever order system.tables uses
        if name in engines:
            match = _RETENTION_TTL.search(engines[name])
            days[name] = int(match.group(1)) if match else None
    return days


def apply_retention(client: Client, retention_days: int) -> list[str]:
    """Change the TTL of every table whose retention differs from ``retention_days``;
    return the tables changed (none when they already match, so it is safe to repeat).

    Migration 0001 writes the retention only when it creates the tables, so without this
    a changed ``WEBHOOKS_RETENTION_DAYS`` would never reach them. ClickHouse then
    re-evaluates the TTL of existing rows in a background mutation.
    """
    days = int(retention_days)
    changed = []
    for table, current in retention_days_of(client).items():
        if current == days:
            continue
        client.command(
            f"ALTER TABLE {table} MODIFY TTL toDateTime(inserted) + INTERVAL {days} DAY")
        log.info("ClickHouse table %s: retention %s -> %d days", table, current, days)
        changed.append(table)
    return changed
