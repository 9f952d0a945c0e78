"""MkDocs hook: the reference pages, generated at build time from the code itself.

- ``reference/ingest-api.md`` and ``reference/eventlog-api.md``: each service's OpenAPI
  document, exported from its FastAPI app (built in a child process against a throwaway
  embedded ClickHouse and no broker: the document needs neither);
- ``reference/cli.md``: every ``webhooks`` command, its usage, help and options, walked
  from the click command tree.

Nothing is written to the source tree; the pages exist only in the build, so they cannot
drift from the code.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import click
from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files

log = logging.getLogger("mkdocs.hooks.reference")

METHODS = ("get", "post", "put", "patch", "delete")


def on_files(files: Files, config: MkDocsConfig) -> Files:
    """Add the generated reference pages."""
    ingest, eventlog = openapi_documents()
    for path, title, document in (("reference/ingest-api.md", "Ingest API", ingest),
                                  ("reference/eventlog-api.md", "Eventlog API", eventlog)):
        files.append(File.generated(config, path, content=openapi_markdown(title, document)))
    files.append(File.generated(config, "reference/cli.md", content=cli_markdown()))
    return files


def openapi_documents() -> tuple[dict[str, Any], dict[str, Any]]:
    """The OpenAPI documents of ingest and the eventlog, from their apps.

    Exported by a child process (this file run as a script): building the apps starts
    Kafka clients that would keep retrying the absent broker, noisily, until exit."""
    repo = Path(__file__).resolve().parents[2]
    exported = subprocess.run([sys.executable, __file__], cwd=repo, capture_output=True,
                              text=True, timeout=300,
                              env={**os.environ, "PYTHONPATH": str(repo)})
    if exported.returncode != 0:
        raise RuntimeError(f"exporting the OpenAPI documents failed:\n{exported.stderr[-3000:]}")
    documents = json.loads(exported.stdout)
    return documents["ingest"], documents["eventlog"]


def _export_openapi() -> None:
    """Print both apps' OpenAPI documents as one JSON object (run in a child process)."""
    from services.eventlog.app import create_app as eventlog_app
    from services.ingest.app import create_app as ingest_app
    from webhooks.secret_encryption import SecretsKeyring
    from webhooks.settings import Settings

    with tempfile.TemporaryDirectory(prefix="docs-clickhouse-") as clickhouse:
        settings = Settings(clickhouse_url=f"chdb://{clickhouse}",
                            kafka_bootstrap="127.0.0.1:1",  # never reached
                            secrets_key=SecretsKeyring.generate("docs"))
        documents = {"ingest": ingest_app(settings).openapi(),
                     "eventlog": eventlog_app(settings).openapi()}
    sys.stdout.write(json.dumps(documents))
    sys.stdout.flush()
    os._exit(0)  # at once: the apps' Kafka clients would wait for the broker on exit


# -- OpenAPI -------------------------------------------------------------------------------

def openapi_markdown(title: str, document: dict[str, Any]) -> str:
    """One page: every operation (parameters, body, answers), then every schema."""
    lines = [f"# {title}", "",
             f"Generated from the service's OpenAPI document (version "
             f"{document['info'].get('version', '')}) when the docs were built.", ""]
    for path, item in document["paths"].items():
        for method in METHODS:
            if method in item:
                lines += _operation(method, path, item[method])
    schemas = document.get("components", {}).get("schemas", {})
    if schemas:
        lines += ["## Schemas", ""]
        for name, schema in sorted(schemas.items()):
            lines += [f"### {name}", "", '??? note "JSON schema"', "", "    ```json",
                      *("    " + line for line in json.dumps(schema, indent=2).splitlines()),
                      "    ```", ""]
    return "\n".join(lines) + "\n"


def _operation(method: str, path: str, operation: dict[str, Any]) -> list[str]:
    lines = [f"## `{method.upper()} {path}`", ""]
    if operation.get("summary"):
        lines += [f"**{operation['summary']}**", ""]
    if operation.get("description"):
        lines += [operation["description"].strip(), ""]
    parameters = operation.get("parameters", [])
    if parameters:
        lines += ["| parameter | in | required | type | description |", "|---|---|---|---|---|"]
        for parameter in parameters:
            lines.append("| `{}` | {} | {} | {} | {} |".format(
                parameter["name"], parameter["in"], "yes" if parameter.get("required") else "",
                _type(parameter.get("schema", {})), _cell(parameter.get("description", ""))))
        lines.append("")
    body = operation.get("requestBody", {}).get("content", {})
    for content_type, media in body.items():
        lines += [f"Request body: `{content_type}`, {_type(media.get('schema', {}))}.", ""]
    answers = operation.get("responses", {})
    if answers:
        lines += ["| status | answer |", "|---|---|"]
        for status, answer in answers.items():
            lines.append(f"| {status} | {_cell(answer.get('description', ''))} |")
        lines.append("")
    return lines


def _type(schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return f"[{name}](#{name.lower()})"
    if "anyOf" in schema:
        return " or ".join(_type(option) for option in schema["anyOf"])
    if schema.get("type") == "array":
        return f"array of {_type(schema.get('items', {}))}"
    return f"`{schema.get('type', 'object')}`"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


# -- CLI -----------------------------------------------------------------------------------

def cli_markdown() -> str:
    """Every command of ``webhooks``, depth first, as ``--help`` shows it."""
    from services.cli import main

    lines = ["# CLI reference", "",
             "Generated from the `webhooks` command's own definitions when the docs were built;",
             "`webhooks COMMAND --help` prints the same.", ""]
    lines += _command(main, "webhooks", None)
    return "\n".join(lines) + "\n"


def _command(command: click.Command, name: str, parent: click.Context | None) -> list[str]:
    context = click.Context(command, info_name=name, parent=parent)
    depth = "#" * min(2 + name.count(" "), 4)
    lines = [f"{depth} `{name}`", ""]
    if command.help:
        lines += [command.help.strip(), ""]
    lines += ["```text", command.get_usage(context), "```", ""]
    options = [p for p in command.get_params(context) if isinstance(p, click.Option)]
    arguments = [p for p in command.params if isinstance(p, click.Argument)]
    if options or arguments:
        lines += ["| option | description |", "|---|---|"]
        for argument in arguments:
            lines.append(f"| `{argument.make_metavar(context)}` | argument |")
        for option in options:
            record = option.get_help_record(context)
            if record:
                lines.append(f"| `{_cell(record[0])}` | {_cell(record[1])} |")
        lines.append("")
    if isinstance(command, click.Group):
        for sub_name in command.list_commands(context):
            sub = command.get_command(context, sub_name)
            if sub is not None and not sub.hidden:
                lines += _command(sub, f"{name} {sub_name}", context)
    return lines


if __name__ == "__main__":
    _export_openapi()
