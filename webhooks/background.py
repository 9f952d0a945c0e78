"""A background worker: one named daemon thread running :meth:`BackgroundWorker.run`.

The Kafka followers and consumers (the compacted-topic follower behind the idempotency
and endpoints views, the Kafka intake, the eventlog sink) subclass it and write only
their loop: ``run()`` works until ``self._stopping`` is set, and waits with
``self._stopping.wait(s)`` so that :meth:`~BackgroundWorker.stop` is never held up by
a pause.

When ``run()`` raises, a worker with ``restart_pause`` set logs a warning and runs it
again after that many seconds (a view rebuilds itself from its topic); otherwise the
worker keeps the exception in :attr:`~BackgroundWorker.failure`, logs it and ends, so
that :attr:`~BackgroundWorker.alive` turns False for the health check.
"""

from __future__ import annotations

import logging
import threading
from typing import ClassVar, Self


class BackgroundWorker:
    """Runs :meth:`run` in a daemon thread from :meth:`start` until :meth:`stop`."""

    thread_name: ClassVar[str] = "background-worker"
    stop_timeout: ClassVar[float] = 10.0
    restart_pause: ClassVar[float | None] = None

    def __init__(self) -> None:
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.failure: BaseException | None = None

    def start(self) -> Self:
        """Start the thread (once per worker)."""
        if self._thread is not None:
            raise RuntimeError(f"{self.thread_name} was already started")
        self._thread = threading.Thread(target=self._main, name=self.thread_name, daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Ask :meth:`run` to finish and wait for the thread (``stop_timeout`` by default)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(self.stop_timeout if timeout is None else timeout)

    @property
    def alive(self) -> bool:
        """True from :meth:`start` until the thread ended (stopped, or failed: see ``failure``)."""
        return self._thread is not None and self._thread.is_alive()

    def run(self) -> None:
        """The work, done in the thread until ``self._stopping`` is set."""
        raise NotImplementedError

    def _main(self) -> None:
        log = logging.getLogger(type(self).__module__)  # the subclass's logger, as before
        while True:
            try:
                self.run()
                return
            except BaseException as exc:
                if self.restart_pause is None or not isinstance(exc, Exception):
                    self.failure = exc
                    log.exception("%s stopped on an unexpected error", self.thread_name)
                    return
                log.warning("%s (re)starting after: %s", self.thread_name, exc)
                if self._stopping.wait(self.restart_pause):
                    return
