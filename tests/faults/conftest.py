"""Fixtures of the fault suite: one platform (ingest, fanout, eventlog as child processes)
on the session broker, shared by the fault tests that kill its services; and the run's
ledger summary."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.faults.stack import FaultStack, fault_settings, own_clickhouse
from tests.support.ledger import REPORT_FILE, REPORTS


@pytest.fixture(scope="package")
def stack(kafka_bootstrap: str, clickhouse_base_url: str,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultStack]:
    """eventlog, two fanout workers and ingest on the session broker."""
    settings = fault_settings(kafka_bootstrap, own_clickhouse(
        clickhouse_base_url, tmp_path_factory.mktemp("fault-clickhouse")))
    platform = FaultStack(settings, tmp_path_factory.mktemp("fault-logs"))
    try:
        for name in ("eventlog", "fanout", "fanout-2", "ingest"):
            platform.start(name)
        yield platform
    finally:
        platform.stop_all()


@pytest.fixture(scope="session", autouse=True)
def fresh_ledger_file() -> None:
    REPORT_FILE.unlink(missing_ok=True)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Each fault test's duplicates, at the end of the run (also in REPORT_FILE)."""
    if REPORTS:
        terminalreporter.section("fault ledger")
        for report in REPORTS:
            terminalreporter.write_line(report.line())
        terminalreporter.write_line(f"(as JSON lines in {REPORT_FILE})")
