"""`make up` / `make down` on spare ports and in a folder of their own, against the
session's broker: a stack someone runs from the checkout is never touched."""

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from services.localdev.kafka_broker import REPO_ROOT, free_port


@pytest.mark.slow
def test_up_is_idempotent_and_down_leaves_nothing(kafka_bootstrap: str, tmp_path: Path) -> None:
    ports = {name: free_port() for name in ("INGEST", "EVENTLOG", "FANOUT")}
    env = {**os.environ, "WEBHOOKS_KAFKA_BOOTSTRAP": kafka_bootstrap,
           "WEBHOOKS_CLICKHOUSE_URL": f"chdb://{tmp_path / 'ch'}",
           "WEBHOOKS_TOPIC_PREFIX": f"up{free_port()}",
           **{f"WEBHOOKS_{name}_PORT": str(port) for name, port in ports.items()}}
    state = ["--state-dir", str(tmp_path / "stack")]
    run_dir = tmp_path / "stack" / ".run"
    run = [sys.executable, "-m", "services.cli"]
    checkout_stack = {p.name: p.read_text() for p in (REPO_ROOT / ".run").glob("*.pid")}
    try:
        first = subprocess.run([*run, "up", *state], env=env, capture_output=True, text=True,
                               timeout=180, cwd=REPO_ROOT)
        assert first.returncode == 0, first.stdout + first.stderr
        for port in ports.values():
            assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
            assert httpx.get(f"http://127.0.0.1:{port}/metrics").status_code == 200
        pids = {p.name: p.read_text() for p in run_dir.glob("*.pid")}
        assert {"ingest.pid", "eventlog.pid", "fanout.pid"} <= set(pids)

        second = subprocess.run([*run, "up", *state], env=env, capture_output=True, text=True,
                                timeout=60, cwd=REPO_ROOT)
        assert second.returncode == 0 and "starting" not in second.stdout
        assert {p.name: p.read_text() for p in run_dir.glob("*.pid")} == pids
    finally:
        subprocess.run([*run, "down", *state], env=env, timeout=60, cwd=REPO_ROOT)
    for pid in pids.values():
        assert not Path(f"/proc/{pid}").exists()
    # A stack started from the checkout (`make up`) kept running, untouched.
    assert {p.name: p.read_text() for p in (REPO_ROOT / ".run").glob("*.pid")} == checkout_stack
