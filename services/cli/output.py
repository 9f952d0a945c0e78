"""How the tenant commands print: aligned tables for people, ``--json`` for scripts."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import click

MAX_CELL = 60  # characters per table cell; longer values are cut with an ellipsis

Column = tuple[str, str | Callable[[dict[str, Any]], Any]]

json_option = click.option("--json", "as_json", is_flag=True,
                           help="Print the API's JSON instead of a table.")


def cell(value: Any) -> str:
    """A value as one short table cell."""
    if value is None:
        text = "-"
    elif isinstance(value, bool):
        text = "yes" if value else "no"
    elif isinstance(value, list | tuple):
        text = ",".join(map(str, value))
    elif isinstance(value, dict):
        text = json.dumps(value, separators=(",", ":"))
    else:
        text = str(value)
    text = " ".join(text.split())
    return text if len(text) <= MAX_CELL else text[:MAX_CELL - 1] + "…"


def table(rows: Sequence[dict[str, Any]], columns: Sequence[Column]) -> str:
    """Rows as left-aligned columns under upper-case headers."""
    cells = [[cell(source(row) if callable(source) else row.get(source))
              for _, source in columns] for row in rows]
    headers = [title.upper() for title, _ in columns]
    widths = [max(len(text) for text in column) for column in zip(headers, *cells, strict=True)]
    lines = ["  ".join(text.ljust(width) for text, width in zip(line, widths, strict=True))
             .rstrip() for line in (headers, *cells)]
    return "\n".join(lines)


def print_json(document: Any) -> None:
    click.echo(json.dumps(document, indent=2, ensure_ascii=False))


def print_rows(rows: Sequence[dict[str, Any]], columns: Sequence[Column], as_json: bool,
               empty: str = "nothing found") -> None:
    """A listing: ``{"data": rows}`` as JSON, else a table (or ``empty``)."""
    if as_json:
        print_json({"data": list(rows)})
    elif rows:
        click.echo(table(rows, columns))
    else:
        click.echo(empty)


def print_record(document: dict[str, Any], as_json: bool,
                 fields: Sequence[str] | None = None,
                 lines: dict[str, list[str]] | None = None) -> None:
    """One object: JSON, or ``name: value`` lines (all fields, or ``fields``). A field
    in ``lines`` shows those texts instead of its value, one per line (``-`` for none)."""
    if as_json:
        print_json(document)
        return
    names = fields or list(document)
    width = max((len(name) for name in names), default=0)
    for name in names:
        if lines is not None and name in lines:
            texts = lines[name] or ["-"]
            click.echo(f"{name + ':':<{width + 1}} {texts[0]}")
            for text in texts[1:]:
                click.echo(f"{'':<{width + 1}} {text}")
            continue
        value = document.get(name)
        text = json.dumps(value, ensure_ascii=False) if isinstance(value, dict) else cell(value)
        click.echo(f"{name + ':':<{width + 1}} {text}")
