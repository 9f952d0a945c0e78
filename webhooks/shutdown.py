"""SIGTERM for the HTTP services (ingest, the eventlog), as Kubernetes sends it.

Kubernetes sends a pod SIGTERM and, at the same time, not before, takes it out of its
Service: proxies and load balancers learn of it a moment later and keep sending requests
meanwhile. uvicorn alone closes its listening socket at once, so those requests are
refused. With :class:`GracefulShutdown` installed (in the app's lifespan), SIGTERM first
only turns ``/healthz`` to 503 (whoever probes stops sending) while the service keeps
serving for ``WEBHOOKS_SHUTDOWN_DELAY``; then uvicorn stops listening, finishes the
requests in flight and runs the app's shutdown (ingest stops its intake and flushes its
producer, the eventlog sink writes and commits what it read), and the process exits 0.

A second SIGTERM, or SIGINT (Ctrl-C), stops at once, as uvicorn does.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)


class GracefulShutdown:
    """Delays uvicorn's reaction to SIGTERM by ``delay`` seconds; :attr:`shutting_down`
    tells ``/healthz`` to answer 503 meanwhile."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.since: float | None = None
        """When the SIGTERM came (``time.monotonic()``); None before."""

    @property
    def shutting_down(self) -> bool:
        return self.since is not None

    def install(self) -> None:
        """Wrap the SIGTERM handler uvicorn installed; call from the app's lifespan
        start-up. Elsewhere (a test client's thread, no uvicorn handler) it does nothing."""
        if threading.current_thread() is not threading.main_thread():
            return
        server_exit = signal.getsignal(signal.SIGTERM)
        if not callable(server_exit):
            return

        def on_sigterm(signum: int, frame: FrameType | None) -> None:
            if self.since is not None:  # a second SIGTERM: stop now
                server_exit(signum, frame)
                return
            self.since = time.monotonic()
            log.info("SIGTERM: /healthz answers 503; serving %g s more, then finishing the "
                     "requests in flight", self.delay)
            timer = threading.Timer(self.delay, _stop_serving, (server_exit, signum, frame))
            timer.daemon = True
            timer.start()

        signal.signal(signal.SIGTERM, on_sigterm)


def _stop_serving(server_exit: Any, signum: int, frame: FrameType | None) -> None:
    """What uvicorn does on a signal, except that it then ends with exit code 0: its own
    handler notes the signal and raises it again once the server stopped (the process
    then ends killed by SIGTERM, exit code 143) although everything was shut down cleanly.
    Without the uvicorn server behind the handler, the handler itself."""
    server = getattr(server_exit, "__self__", None)
    if server is not None and hasattr(server, "should_exit"):
        server.should_exit = True
    else:
        server_exit(signum, frame)
