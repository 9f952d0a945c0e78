"""``WEBHOOKS_LOG_FORMAT``: readable text or one JSON object per line, both carrying the
event id, endpoint id and attempt a log call attaches."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest

from webhooks.observability import JsonFormatter, TextFormatter, logging_config
from webhooks.settings import Settings

CONTEXT = {"event_id": "evt_1", "endpoint_id": "ep_1", "attempt": 3, "tenant": "acme"}


def record(message: str = "dead-lettered: %s", *args: object, **extra: object
           ) -> logging.LogRecord:
    made = logging.LogRecord("services.fanout.worker", logging.INFO, __file__, 1, message,
                             args or ("retries exhausted",), None)
    for name, value in extra.items():
        setattr(made, name, value)
    return made


def test_json_lines_carry_the_context() -> None:
    line = JsonFormatter().format(record(**CONTEXT))
    document = json.loads(line)
    assert document["message"] == "dead-lettered: retries exhausted"
    assert document["level"] == "INFO" and document["logger"] == "services.fanout.worker"
    assert {k: document[k] for k in CONTEXT} == CONTEXT
    assert document["time"].endswith("Z")
    assert "task_id" not in document  # only the fields given


def test_json_keeps_exceptions_on_one_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        failing = record("failed: %s")
        failing.exc_info = sys.exc_info()
    line = JsonFormatter().format(failing)
    assert "\n" not in line and "ValueError: boom" in json.loads(line)["exception"]


def test_text_appends_the_context() -> None:
    line = TextFormatter().format(record(**CONTEXT))
    assert line.endswith("dead-lettered: retries exhausted tenant=acme event_id=evt_1 "
                         "endpoint_id=ep_1 attempt=3")


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_the_setting_chooses_the_format_of_a_process(log_format: str) -> None:
    assert Settings(log_format=log_format).log_format == log_format
    program = ("import logging, sys; from webhooks.observability import configure_logging; "
               f"configure_logging('INFO', {log_format!r}); "
               "logging.getLogger('uvicorn.error').info('started', extra={'attempt': 2})")
    output = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                            check=True).stderr.strip()
    if log_format == "json":
        assert json.loads(output)["attempt"] == 2
        assert json.loads(output)["logger"] == "uvicorn.error"
    else:
        assert output.endswith("INFO uvicorn.error: started attempt=2")


def test_an_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="log_format"):
        Settings(log_format="xml")
    assert logging_config("debug", "json")["root"]["level"] == "DEBUG"
