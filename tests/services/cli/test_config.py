"""Where the tenant commands get the URLs and the key: flags over environment over the
config file over defaults (no stack needed: the resolved values are checked directly)."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from services.cli import main
from services.cli.config import (
    DEFAULT_EVENTLOG_URL,
    DEFAULT_INGEST_URL,
    ApiSettings,
    default_config_path,
    resolve,
)

NO_FLAGS: dict[str, str | None] = {}


def test_the_config_file_fills_what_flags_leave_open(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('api_key = "from-file"\neventlog_url = "http://file:1/"\n'
                      'tenant = "acme"\n')
    assert resolve(NO_FLAGS, config) == ApiSettings(
        api_key="from-file", ingest_url=DEFAULT_INGEST_URL, eventlog_url="http://file:1",
        tenant="acme")
    flags = {"api_key": "from-flag", "ingest_url": "http://flag:2"}
    assert resolve(flags, config) == ApiSettings(
        api_key="from-flag", ingest_url="http://flag:2", eventlog_url="http://file:1",
        tenant="acme")


def test_the_default_file_lives_under_xdg_config_home(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert default_config_path() == tmp_path / "webhooks" / "config.toml"
    with pytest.raises(click.UsageError, match="no API key"):
        resolve(NO_FLAGS, None)  # no file there: fine, but no key anywhere
    default_config_path().parent.mkdir()
    default_config_path().write_text('api_key = "k"\n')
    assert resolve(NO_FLAGS, None).eventlog_url == DEFAULT_EVENTLOG_URL


@pytest.mark.parametrize(("content", "message"), [
    ('api_key = "k"\nsecret = "x"\n', "unknown keys secret"),
    ("api_key = 3\n", "must be strings"),
    ("api_key = \n", "config file"),
])
def test_bad_config_files_are_usage_errors(tmp_path: Path, content: str, message: str) -> None:
    config = tmp_path / "config.toml"
    config.write_text(content)
    with pytest.raises(click.UsageError, match=message):
        resolve(NO_FLAGS, config)


def test_environment_reaches_the_commands_and_a_missing_named_file_is_refused(
        tmp_path: Path) -> None:
    # The environment names a key and an unreachable eventlog: the command uses both.
    env = {"WEBHOOKS_API_KEY": "k", "WEBHOOKS_EVENTLOG_URL": "http://127.0.0.1:9",
           "XDG_CONFIG_HOME": str(tmp_path), "WEBHOOKS_CONFIG": None, "WEBHOOKS_TENANT": None}
    result = CliRunner().invoke(main, ["endpoints", "list"], env=env)
    assert result.exit_code == 1
    assert "cannot reach eventlog at http://127.0.0.1:9" in result.stderr
    result = CliRunner().invoke(main, ["--config", str(tmp_path / "nope.toml"),
                                       "endpoints", "list"], env=env)
    assert result.exit_code == 2
    assert "does not exist" in result.stderr
