"""`make up` / `make down`: the local Kafka broker and the three services in the background.

State lives in git-ignored folders of the checkout, or of another folder given as
``--state-dir`` (the tests use their own, so they never touch a stack someone runs):
``.data/`` (Kafka logs, embedded ClickHouse) and ``.run/`` (pid files and service logs).
``up`` is idempotent: it starts only what is not already answering.
"""

from __future__ import annotations

import logging
import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from services.localdev.kafka_broker import (
    REPO_ROOT,
    LocalKafka,
    port_open,
    stop_pid,
    wait_until_ready,
)
from webhooks.secret_encryption import SecretsKeyring
from webhooks.settings import Settings
from webhooks.topics import ensure_topics

SERVICES = ("ingest", "eventlog", "fanout")


@dataclass(frozen=True)
class StackFolders:
    """Where one local stack keeps its state: ``<root>/.data`` and ``<root>/.run``."""

    root: Path = REPO_ROOT

    @property
    def data(self) -> Path:
        """Kafka logs, the embedded ClickHouse, Faust's data, ingest's idempotency index,
        the dev API key and the secrets key."""
        return self.root / ".data"

    @property
    def run(self) -> Path:
        """Pid files and service logs."""
        return self.root / ".run"


@dataclass(frozen=True)
class LocalService:
    name: str
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/healthz", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False


def _services(settings: Settings) -> list[LocalService]:
    ports = {"ingest": settings.ingest_port, "eventlog": settings.eventlog_port,
             "fanout": settings.fanout_port}
    return [LocalService(name, ports[name]) for name in SERVICES]


def _local_kafka_port(bootstrap: str) -> int | None:
    """The port to run a local broker on, or None when the bootstrap names another host."""
    first = bootstrap.split(",")[0]
    host, _, port = first.rpartition(":")
    return int(port) if host in ("127.0.0.1", "localhost") else None


def _dev_api_key(folders: StackFolders) -> str:
    """The local API key for tenant ``dev``: made once, kept in ``.data/dev-api-key``."""
    path = folders.data / "dev-api-key"
    if not path.exists():
        path.write_text(f"dev_{secrets.token_urlsafe(24)}")
        path.chmod(0o600)
    return path.read_text().strip()


def _dev_secrets_key(folders: StackFolders) -> str:
    """The local WEBHOOKS_SECRETS_KEY: made once, kept in ``.data/secrets-key`` (the local
    endpoints' secrets are sealed with it; losing it loses them, like the data beside it)."""
    path = folders.data / "secrets-key"
    if not path.exists():
        # Created readable by its owner only, never briefly by others.
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
            out.write(SecretsKeyring.generate("dev1").to_setting())
    return path.read_text().strip()


def up(settings: Settings, folders: StackFolders = StackFolders(),
       timeout: float = 120.0) -> None:
    """Start whatever is not running yet and wait until everything is healthy."""
    logging.getLogger("httpx").setLevel(logging.WARNING)
    run_dir, data_dir = folders.run, folders.data
    run_dir.mkdir(parents=True, exist_ok=True)
    data_dir.mkdir(parents=True, exist_ok=True)
    port = _local_kafka_port(settings.kafka_bootstrap)
    if port is not None and not port_open(port):
        print(f"starting Kafka {settings.kafka_bootstrap} …", flush=True)
        broker = LocalKafka(data_dir / "kafka", port=port)
        broker.start(timeout=timeout, detach=True)
        (run_dir / "kafka.pid").write_text(str(broker.process.pid if broker.process else 0))
    else:
        wait_until_ready(settings.kafka_bootstrap, timeout)
    ensure_topics(settings)

    env = dict(os.environ)
    env.setdefault("WEBHOOKS_CLICKHOUSE_URL", f"chdb://{data_dir / 'clickhouse'}")
    # A local try-out works without configuration: a generated key for tenant "dev", a
    # generated secrets key, and webhooks may target receivers on this machine. Explicit
    # settings win.
    if not settings.api_keys:
        env["WEBHOOKS_API_KEYS"] = f"{_dev_api_key(folders)}:dev"
    if settings.secrets_key is None:
        env["WEBHOOKS_SECRETS_KEY"] = _dev_secrets_key(folders)
    env.setdefault("WEBHOOKS_ALLOW_PRIVATE_TARGETS", "true")
    # Faust's data directory defaults to the working directory; keep it with the rest, as
    # ingest's idempotency index.
    env.setdefault("FAUST_DATADIR", str(data_dir / "fanout"))
    env.setdefault("WEBHOOKS_IDEMPOTENCY_DIR", str(data_dir / "idempotency"))
    for service in _services(settings):
        if service.healthy() or port_open(service.port):
            continue
        print(f"starting {service.name} …", flush=True)
        with open(run_dir / f"{service.name}.log", "ab") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "services.cli", "serve", service.name],
                stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                cwd=REPO_ROOT,
            )
        (run_dir / f"{service.name}.pid").write_text(str(process.pid))

    deadline = time.monotonic() + timeout
    waiting = _services(settings)
    while waiting and time.monotonic() < deadline:
        waiting = [service for service in waiting if not service.healthy()]
        time.sleep(0.5)
    if waiting:
        names = ", ".join(s.name for s in waiting)
        raise SystemExit(f"not healthy after {timeout:.0f}s: {names} (see {run_dir}/*.log)")
    print(f"Kafka      {settings.kafka_bootstrap}")
    if not settings.api_keys:
        print(f"API key    tenant 'dev': the key in {data_dir / 'dev-api-key'}")
    for service in _services(settings):
        print(f"{service.name:<10} {service.url}   (health {service.url}/healthz)")


def down(folders: StackFolders = StackFolders()) -> None:
    """Stop the services, then the broker; leaves the data in ``.data/``."""
    for name in (*SERVICES, "kafka"):
        if stop_pid(folders.run / f"{name}.pid"):
            print(f"stopped {name}")
