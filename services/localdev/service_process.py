"""One service (``webhooks serve <name>``) in a child process, configured by a Settings
object: how the tests and benchmarks run ingest, fanout and eventlog as deployed, each
with its own interpreter."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

from services.localdev.kafka_broker import REPO_ROOT, free_port
from webhooks.settings import Settings

SERVICE_NAMES = ("ingest", "fanout", "eventlog")


def settings_env(settings: Settings) -> dict[str, str]:
    """The ``WEBHOOKS_*`` environment that makes a child process read ``settings``.

    The parent's other variables are kept; its own ``WEBHOOKS_*`` ones are dropped so
    that nothing but ``settings`` decides the child's configuration.
    """
    env = {key: value for key, value in os.environ.items() if not key.startswith("WEBHOOKS_")}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if isinstance(value, dict):
            text = ",".join(f"{key}:{item}" for key, item in value.items())
        elif isinstance(value, tuple | list):
            text = ",".join(map(str, value))
        else:
            text = str(value)
        env[f"WEBHOOKS_{name.upper()}"] = text
    return env


class ServiceProcess:
    """``webhooks serve <name>`` on a free loopback port, with its output in ``log_path``."""

    def __init__(self, name: str, settings: Settings, log_path: Path,
                 env: Mapping[str, str] | None = None) -> None:
        """``env``: further variables for the child (e.g. ``OTEL_*``)."""
        if name not in SERVICE_NAMES:
            raise ValueError(f"unknown service {name!r}; expected one of {SERVICE_NAMES}")
        self.name = name
        self.port = free_port()
        self.settings = settings.model_copy(update={"host": "127.0.0.1",
                                                    f"{name}_port": self.port})
        self.log_path = log_path
        self.env = dict(env or {})
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90.0) -> ServiceProcess:
        """Start the process and wait until its ``/healthz`` answers 200."""
        self.launch()
        self.wait_healthy(timeout)
        return self

    def launch(self) -> ServiceProcess:
        """Start the process without waiting for it (several start side by side)."""
        env = {**settings_env(self.settings), **self.env}
        # Faust's data directory defaults to the working directory; keep it out of the repo.
        faust_dir = Path(tempfile.gettempdir()) / "webhooks-faust"
        faust_dir.mkdir(exist_ok=True)
        env.setdefault("FAUST_DATADIR", str(faust_dir / self.settings.topic_prefix))
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "services.cli", "serve", self.name],
                cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        return self

    def wait_healthy(self, timeout: float) -> None:
        """Wait for ``/healthz`` to answer 200; fail early if the process exits."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise TimeoutError(f"{self.name} not healthy after {timeout:.0f}s: {self.log_tail()}")

    def metrics(self, timeout: float = 5.0) -> str:
        """The Prometheus text of ``/metrics``."""
        return httpx.get(f"{self.url}/metrics", timeout=timeout).text

    def metric_by_label(self, name: str, label: str) -> dict[str, float]:
        """The samples of metric ``name``, summed per value of ``label`` (e.g. the
        consumer lag per topic); values with no sample are absent."""
        pattern = re.compile(rf'^{re.escape(name)}\{{.*\b{re.escape(label)}="([^"]*)".*\}} (\S+)$')
        totals: dict[str, float] = {}
        for line in self.metrics().splitlines():
            if found := pattern.match(line):
                totals[found[1]] = totals.get(found[1], 0.0) + float(found[2])
        return totals

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def kill(self) -> None:
        """``kill -9``: a crash, no clean shutdown and no final commit."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM and wait; SIGKILL if it does not exit in time."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.wait_exit(timeout)

    def terminate(self) -> None:
        """SIGTERM without waiting: the process shuts down on its own time."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()

    def wait_exit(self, timeout: float = 20.0) -> None:
        """Wait for the process to exit; SIGKILL if it does not in time."""
        if self.process is not None:
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> ServiceProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
