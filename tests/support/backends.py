"""Which real Kafka and ClickHouse the tests run against.

Order: servers named by WEBHOOKS_KAFKA_BOOTSTRAP / WEBHOOKS_CLICKHOUSE_URL; else
testcontainers where a Docker engine answers; else the local broker (Maven jars,
Java 17) and the embedded ClickHouse engine. The same tests run on every backend.
"""

from __future__ import annotations

import shutil
import subprocess
from urllib.parse import urlsplit, urlunsplit


def docker_available() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def with_database(url: str, database: str) -> str:
    """``url`` pointing at ``database`` (a query parameter for chdb, the path for http)."""
    parts = urlsplit(url)
    if parts.scheme == "chdb":
        return urlunsplit((parts.scheme, parts.netloc, parts.path, f"database={database}", ""))
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", "", ""))
