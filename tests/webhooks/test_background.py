"""The background worker's lifecycle with real threads: stop, crash, restart."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from webhooks.background import BackgroundWorker


class Looping(BackgroundWorker):
    """Waits on the stop flag like the Kafka loops do; fails its first ``failures`` runs."""

    thread_name = "test-looping"
    stop_timeout = 5.0

    def __init__(self, failures: int = 0, error: BaseException | None = None) -> None:
        super().__init__()
        self.failures = failures
        self.error = error or ValueError("broker gone")
        self.runs = 0
        self.looping = threading.Event()

    def run(self) -> None:
        self.runs += 1
        if self.runs <= self.failures:
            raise self.error
        self.looping.set()
        while not self._stopping.wait(0.01):
            pass


class Restarting(Looping):
    restart_pause = 0.05


def ended(worker: BackgroundWorker, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while worker.alive and time.monotonic() < deadline:
        time.sleep(0.01)
    return not worker.alive


def test_stop_ends_the_thread_without_a_failure() -> None:
    worker = Looping()
    assert not worker.alive
    assert worker.start() is worker
    assert worker.looping.wait(5) and worker.alive
    assert worker._thread is not None and worker._thread.name == "test-looping"
    assert worker._thread.daemon

    worker.stop()
    assert not worker.alive and worker.failure is None and worker.runs == 1


def test_a_worker_starts_once() -> None:
    worker = Looping().start()
    try:
        with pytest.raises(RuntimeError):
            worker.start()
    finally:
        worker.stop()


def test_stop_before_start_is_harmless() -> None:
    worker = Looping()
    worker.stop(timeout=0.1)
    assert not worker.alive and worker.failure is None


def test_a_crash_ends_the_worker_and_is_kept_and_logged(
        caplog: pytest.LogCaptureFixture) -> None:
    worker = Looping(failures=1)
    with caplog.at_level(logging.ERROR, logger=__name__):
        worker.start()
        assert ended(worker)
    assert worker.failure is worker.error and worker.runs == 1
    [record] = [r for r in caplog.records if r.name == __name__]
    assert "test-looping stopped" in record.getMessage()
    assert record.exc_info is not None and record.exc_info[1] is worker.error


def test_a_base_exception_is_kept_too(caplog: pytest.LogCaptureFixture) -> None:
    worker = Restarting(failures=1, error=SystemExit(3))
    with caplog.at_level(logging.ERROR, logger=__name__):
        worker.start()
        assert ended(worker)
    assert isinstance(worker.failure, SystemExit) and worker.runs == 1  # never restarted


def test_a_restarting_worker_runs_again_after_a_crash(caplog: pytest.LogCaptureFixture) -> None:
    worker = Restarting(failures=2)
    with caplog.at_level(logging.WARNING, logger=__name__):
        worker.start()
        assert worker.looping.wait(5)
    try:
        assert worker.alive and worker.runs == 3 and worker.failure is None
        restarts = [r.getMessage() for r in caplog.records if r.name == __name__]
        assert restarts == ["test-looping (re)starting after: broker gone"] * 2
    finally:
        worker.stop()
    assert not worker.alive


def test_stop_cuts_the_pause_before_a_restart() -> None:
    class Failing(Looping):
        restart_pause = 60.0

    worker = Failing(failures=1_000).start()
    assert ended(worker, timeout=0.5) is False  # pausing, not dead
    started = time.monotonic()
    worker.stop()
    assert not worker.alive and time.monotonic() - started < 2.0
    assert worker.runs == 1 and worker.failure is None
