"""`make up` / `make down` on spare ports and in a folder of their own, against the
session's broker: a stack someone runs from the checkout is never touched. The same
stack runs every command of the documentation's Quickstart."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from services.localdev.kafka_broker import REPO_ROOT, free_port
from tests.support.receiver import Receiver

QUICKSTART = REPO_ROOT / "docs" / "quickstart.md"
RUN = [sys.executable, "-m", "services.cli"]


@dataclass
class Stack:
    """A `webhooks up` stack in ``root``, its environment and service ports."""

    root: Path
    env: dict[str, str]
    ports: dict[str, int]

    def up(self, timeout: float) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*RUN, "up", "--state-dir", str(self.root)], env=self.env,
                              capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT)

    def pids(self) -> dict[str, str]:
        return {p.name: p.read_text() for p in (self.root / ".run").glob("*.pid")}


def checkout_pids() -> dict[str, str]:
    return {p.name: p.read_text() for p in (REPO_ROOT / ".run").glob("*.pid")}


@pytest.fixture(scope="module")
def stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One `webhooks up` (what `make up` runs once its dependencies are installed); on
    teardown `webhooks down`, which must leave no process behind and the checkout's own
    stack (if one runs) untouched."""
    root = tmp_path_factory.mktemp("stack")
    ports = {name: free_port() for name in ("INGEST", "EVENTLOG", "FANOUT")}
    env = {**os.environ, "WEBHOOKS_KAFKA_BOOTSTRAP": kafka_bootstrap,
           "WEBHOOKS_CLICKHOUSE_URL": f"chdb://{root / 'ch'}",
           "WEBHOOKS_TOPIC_PREFIX": f"up{free_port()}",
           **{f"WEBHOOKS_{name}_PORT": str(port) for name, port in ports.items()}}
    running = Stack(root, env, ports)
    before = checkout_pids()
    started = running.up(timeout=180)
    assert started.returncode == 0, started.stdout + started.stderr
    pids = running.pids()
    try:
        yield running
    finally:
        subprocess.run([*RUN, "down", "--state-dir", str(root)], env=env, timeout=60,
                       cwd=REPO_ROOT)
    for pid in pids.values():
        assert not Path(f"/proc/{pid}").exists()
    assert checkout_pids() == before


@pytest.mark.slow
def test_up_is_idempotent(stack: Stack) -> None:
    for port in stack.ports.values():
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
        assert httpx.get(f"http://127.0.0.1:{port}/metrics").status_code == 200
    pids = stack.pids()
    assert {"ingest.pid", "eventlog.pid", "fanout.pid"} <= set(pids)

    second = stack.up(timeout=60)
    assert second.returncode == 0 and "starting" not in second.stdout
    assert stack.pids() == pids


def quickstart_blocks() -> list[str]:
    """The shell blocks of the Quickstart, in order."""
    return re.findall(r"```sh\n(.*?)```", QUICKSTART.read_text(), flags=re.S)


@pytest.mark.slow
def test_every_quickstart_command_runs_against_the_stack(stack: Stack) -> None:
    """The page's commands as written, with this stack's ports for the default ones and
    a receiver of the test's own for port 9999; `make up` is what the fixture ran."""
    first, *commands = quickstart_blocks()
    assert first.strip() == "make up"
    receiver = Receiver().start()
    try:
        script = "\n".join(commands)
        for default, port in (("8081", stack.ports["INGEST"]), ("8082", stack.ports["EVENTLOG"]),
                              ("9999", receiver.port)):
            script = re.sub(rf"(localhost|127\.0\.0\.1):{default}\b", f"127.0.0.1:{port}",
                            script)
        (stack.root / ".venv").unlink(missing_ok=True)
        (stack.root / ".venv").symlink_to(REPO_ROOT / ".venv")  # the page's $PWD/.venv
        env = {**stack.env,
               "WEBHOOKS_INGEST_URL": f"http://127.0.0.1:{stack.ports['INGEST']}",
               "WEBHOOKS_EVENTLOG_URL": f"http://127.0.0.1:{stack.ports['EVENTLOG']}"}
        ran = subprocess.run(["bash", "-euo", "pipefail", "-c", script], env=env,
                             cwd=stack.root, capture_output=True, text=True, timeout=120)
        assert ran.returncode == 0, ran.stdout + ran.stderr
        assert "whsec_" in ran.stdout  # the endpoint's secret, shown once
        hooked = receiver.wait_for("/hook", 3)  # order_1, order_2 and order_3, delivered
        assert len(receiver.at("/listen")) == 1  # what `webhooks listen` forwarded
    finally:
        receiver.stop()
    assert {json.loads(r.body)["data"]["object"]["id"] for r in hooked} == {
        "order_1", "order_2", "order_3"}
    for request in receiver.requests:
        assert request.headers["webhook-signature"].startswith("v1,")
