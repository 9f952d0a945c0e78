"""`make up` / `make down` on spare ports, against the session's broker."""

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
    run = [sys.executable, "-m", "services.cli"]
    try:
        first = subprocess.run([*run, "up"], env=env, capture_output=True, text=True,
                               timeout=180, cwd=REPO_ROOT)
        assert first.returncode == 0, first.stdout + first.stderr
        for port in ports.values():
            assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
            assert httpx.get(f"http://127.0.0.1:{port}/metrics").status_code == 200
        pids = {p.name: p.read_text() for p in (REPO_ROOT / ".run").glob("*.pid")}

        second = subprocess.run([*run, "up"], env=env, capture_output=True, text=True,
                                timeout=60, cwd=REPO_ROOT)
        assert second.returncode == 0 and "starting" not in second.stdout
        assert {p.name: p.read_text() for p in (REPO_ROOT / ".run").glob("*.pid")} == pids
    finally:
        subprocess.run([*run, "down"], env=env, timeout=60, cwd=REPO_ROOT)
    for pid in pids.values():
        assert not Path(f"/proc/{pid}").exists()
