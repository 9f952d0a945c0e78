"""A real HTTP forward proxy for tests: proxy.py (PyPI ``proxy.py``) in its own process.

It tunnels ``CONNECT`` and forwards absolute-form requests, optionally behind Basic
credentials, and writes an access log line per request or tunnel (``CONNECT
127.0.0.1:8443 - … bytes``, ``POST 127.0.0.1:8080/hook - 204 No Content - …``), which the
tests read to see what the proxy was asked to reach. A tunnel's line is written when it
closes.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from webhooks.delivery_proxy import DeliveryProxy

START_TIMEOUT = 60.0


@dataclass
class HttpProxy:
    """``proxy.py`` on ``host``, logging to ``folder``; ``port`` 0 picks a free one."""

    folder: Path
    host: str = "127.0.0.1"
    port: int = 0
    credentials: tuple[str, str] | None = None
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def log_path(self) -> Path:
        return self.folder / "proxy.log"

    def start(self) -> HttpProxy:
        """Start it (again, on the same port, after :meth:`stop`) and wait until it listens."""
        port_file = self.folder / "port"
        port_file.unlink(missing_ok=True)
        command = [sys.executable, "-m", "proxy", "--hostname", self.host,
                   "--port", str(self.port), "--port-file", str(port_file),
                   "--num-acceptors", "1", "--log-level", "INFO",
                   "--log-file", str(self.log_path)]
        if self.credentials is not None:
            command += ["--basic-auth", ":".join(self.credentials)]
        self._process = subprocess.Popen(command, stdout=subprocess.DEVNULL,
                                         stderr=(self.folder / "proxy.err").open("ab"))
        deadline = time.monotonic() + START_TIMEOUT
        while not (port_file.exists() and port_file.read_text().strip()):
            if self._process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"proxy.py did not start: {self.folder / 'proxy.err'}")
            time.sleep(0.05)
        self.port = int(port_file.read_text().split()[0])
        return self

    def stop(self) -> None:
        """Stop the process (its port is kept for a restart)."""
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None

    def setting(self, host: str | None = None) -> DeliveryProxy:
        """The ``WEBHOOKS_DELIVERY_PROXY`` value that reaches it (through ``host``, a name
        resolving to it, if given)."""
        credentials = ""
        if self.credentials is not None:
            user, password = self.credentials
            credentials = f"{quote(user, safe='')}:{quote(password, safe='')}@"
        return DeliveryProxy.parse(f"http://{credentials}{host or self.host}:{self.port}")

    def log(self) -> str:
        """The access log so far."""
        return self.log_path.read_text() if self.log_path.exists() else ""

    def wait_for_log(self, text: str, timeout: float = 30.0) -> str:
        """The log, once it contains ``text`` (a tunnel is logged when it closes)."""
        deadline = time.monotonic() + timeout
        while text not in (log := self.log()):
            if time.monotonic() > deadline:
                raise AssertionError(f"the proxy never logged {text!r}; its log:\n{log}")
            time.sleep(0.05)
        return log
