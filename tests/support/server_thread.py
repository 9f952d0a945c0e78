"""An ASGI app under a real uvicorn server in a background thread, on a loopback port.

For what the TestClient cannot do well: endless responses (event streams) read over a
real socket, and servers that a child process (the CLI) must reach.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import uvicorn

from services.localdev.kafka_broker import free_port


class ServerThread:
    """``with ServerThread(app) as server: server.url …``"""

    def __init__(self, app: Any, port: int | None = None) -> None:
        self.port = port or free_port()
        # A short graceful shutdown: an open stream never ends by itself.
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                timeout_graceful_shutdown=1)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn did not start on port {self.port}")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)
