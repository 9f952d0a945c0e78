"""Where the tenant commands find the APIs and the key: flags, environment, config file.

Each value comes from the first of: its flag (``--api-key``), its environment variable
(``WEBHOOKS_API_KEY``; click reads both), the config file, the default. The config
file is TOML, ``~/.config/webhooks/config.toml`` (under ``$XDG_CONFIG_HOME`` if set)
unless ``--config`` / ``WEBHOOKS_CONFIG`` names another::

    api_key = "key-…"
    ingest_url = "http://127.0.0.1:8081"
    eventlog_url = "http://127.0.0.1:8082"
    tenant = "acme"        # admin keys only: the tenant to act for
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

DEFAULT_INGEST_URL = "http://127.0.0.1:8081"
DEFAULT_EVENTLOG_URL = "http://127.0.0.1:8082"
CONFIG_KEYS = ("api_key", "ingest_url", "eventlog_url", "tenant")


def default_config_path() -> Path:
    """``$XDG_CONFIG_HOME/webhooks/config.toml``, else under ``~/.config``."""
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "webhooks" / "config.toml"


@dataclass(frozen=True)
class ApiSettings:
    """What a tenant command needs to reach the platform."""

    api_key: str
    ingest_url: str
    eventlog_url: str
    tenant: str | None = None


def read_config_file(path: Path | None) -> dict[str, Any]:
    """The file's settings; a missing default file is empty, a missing named one an error."""
    explicit = path is not None
    path = path or default_config_path()
    if not path.exists():
        if explicit:
            raise click.UsageError(f"config file {path} does not exist")
        return {}
    try:
        document = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise click.UsageError(f"config file {path}: {exc}") from exc
    unknown = sorted(set(document) - set(CONFIG_KEYS))
    if unknown:
        raise click.UsageError(f"config file {path}: unknown keys {', '.join(unknown)} "
                               f"(known: {', '.join(CONFIG_KEYS)})")
    bad = [key for key, value in document.items() if not isinstance(value, str)]
    if bad:
        raise click.UsageError(f"config file {path}: {', '.join(bad)} must be strings")
    return document


def resolve(flags: dict[str, str | None], config_path: Path | None) -> ApiSettings:
    """Flags (and environment, which click folds into them) over the file over defaults."""
    file = read_config_file(config_path)
    values = {key: flags.get(key) or file.get(key) for key in CONFIG_KEYS}
    if not values["api_key"]:
        raise click.UsageError("no API key: pass --api-key, set WEBHOOKS_API_KEY, or put "
                               f"api_key in {config_path or default_config_path()}")
    return ApiSettings(
        api_key=values["api_key"],
        ingest_url=(values["ingest_url"] or DEFAULT_INGEST_URL).rstrip("/"),
        eventlog_url=(values["eventlog_url"] or DEFAULT_EVENTLOG_URL).rstrip("/"),
        tenant=values["tenant"] or None,
    )
