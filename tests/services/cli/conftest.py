"""The real stack for the CLI tests: ingest, fanout and eventlog each in their own process
(``webhooks serve …``, as deployed) on the session's broker and ClickHouse engine, once
for the whole package; and a way to run ``webhooks`` commands against it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from services.cli import main
from services.localdev.kafka_broker import REPO_ROOT
from services.localdev.service_process import ServiceProcess
from tests.conftest import TEST_API_KEYS, TEST_SECRETS_KEY
from tests.support.backends import with_database
from tests.support.eventlog import eventually
from tests.support.receiver import Receiver
from webhooks.settings import Settings
from webhooks.topics import ensure_topics


@pytest.fixture(scope="package")
def stack_settings(kafka_bootstrap: str, clickhouse_base_url: str,
                   tmp_path_factory: pytest.TempPathFactory) -> Settings:
    scope = f"t{uuid.uuid4().hex[:10]}"
    if clickhouse_base_url.startswith("chdb://"):
        # The embedded engine belongs to one process: the eventlog gets its own directory.
        clickhouse_base_url = f"chdb://{tmp_path_factory.mktemp('cli-clickhouse')}"
    settings = Settings(
        kafka_bootstrap=kafka_bootstrap, clickhouse_url=with_database(clickhouse_base_url, scope),
        topic_prefix=scope, topic_partitions=3, retry_schedule="1s,2s", retry_jitter=0.0,
        api_keys=TEST_API_KEYS, secrets_key=TEST_SECRETS_KEY,
        allow_private_targets=("127.0.0.0/8",), delivery_timeout=5.0,
        sink_batch_wait=0.1, cursor_secret="cli-cursor-secret")
    ensure_topics(settings)
    return settings


@pytest.fixture(scope="package")
def stack(stack_settings: Settings, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[dict[str, ServiceProcess]]:
    logs: Path = tmp_path_factory.mktemp("cli-logs")
    running: dict[str, ServiceProcess] = {}
    try:
        for name in ("eventlog", "fanout", "ingest"):
            running[name] = ServiceProcess(name, stack_settings, logs / f"{name}.log").start()
        yield running
    finally:
        for process in running.values():
            process.stop()


@pytest.fixture(scope="package")
def cli_receiver() -> Iterator[Receiver]:
    server = Receiver().start()
    yield server
    server.stop()


@dataclass
class Cli:
    """Runs ``webhooks`` commands against the stack, as one tenant (its API key)."""

    env: dict[str, str | None]  # None: unset

    def __call__(self, *args: str, expect: int = 0, input: str | None = None) -> Result:
        """Run in-process (click's runner); assert the exit code."""
        result = CliRunner().invoke(main, list(args), env=self.env, input=input,
                                    catch_exceptions=False)
        assert result.exit_code == expect, (
            f"webhooks {' '.join(args)} exited {result.exit_code}: "
            f"{result.stdout}{result.stderr}")
        return result

    def json(self, *args: str) -> Any:
        """The ``--json`` output of a command."""
        return json.loads(self(*args, "--json").stdout)

    def spawn(self, *args: str) -> subprocess.Popen[str]:
        """The command in a child process (for commands that run until stopped)."""
        return subprocess.Popen(
            [sys.executable, "-m", "services.cli", *args], cwd=REPO_ROOT, text=True,
            env={k: v for k, v in {**os.environ, **self.env}.items() if v is not None},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def as_key(self, key: str) -> Cli:
        return Cli({**self.env, "WEBHOOKS_API_KEY": key})


@pytest.fixture(scope="package")
def cli(stack: dict[str, ServiceProcess], tmp_path_factory: pytest.TempPathFactory) -> Cli:
    # An empty config home: the tester's own ~/.config/webhooks never leaks in.
    home = tmp_path_factory.mktemp("cli-config-home")
    return Cli({"WEBHOOKS_API_KEY": "key-acme", "WEBHOOKS_INGEST_URL": stack["ingest"].url,
                "WEBHOOKS_EVENTLOG_URL": stack["eventlog"].url, "XDG_CONFIG_HOME": str(home),
                "WEBHOOKS_CONFIG": None, "WEBHOOKS_TENANT": None})


def create_live_endpoint(cli: Cli, receiver: Receiver, path: str, *events: str
                         ) -> dict[str, Any]:
    """``endpoints create``, then ``endpoints test`` until the fanout delivers to it (its
    view of the endpoints has caught up)."""
    endpoint = cli.json("endpoints", "create", "--url", receiver.url(path),
                        *[arg for event in events for arg in ("--events", event)])

    def test_message_arrived() -> bool:
        if any(json.loads(r.body)["type"] == "webhook.test" for r in receiver.at(path)):
            return True
        cli("endpoints", "test", endpoint["id"])
        return False

    eventually(test_message_arrived, timeout=60, interval=2.0)
    return endpoint
