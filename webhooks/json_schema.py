"""JSON Schemas (``webhooks/schemas/``, package data): loading and precise validation errors.

:func:`validate` runs ``jsonschema`` and names every violation; it costs hundreds of
microseconds per document. :func:`check` is the hot-path way in: ``jsonschema-rs``
(compiled, Rust) decides valid documents in about a microsecond, and only a document it
refuses goes through :func:`validate`, which builds the exact error message.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema_rs
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from referencing import Registry, Resource

SCHEMAS_DIR = Path(__file__).resolve().parent / "schemas"


class SchemaError(ValueError):
    """A document does not conform to its schema; ``errors`` says where and why.

    The messages quote offending values; ``fields`` names only where they are, for logs
    that must not repeat what a document holds (signing secrets).
    """

    def __init__(self, schema: str, errors: list[str], fields: list[str] | None = None) -> None:
        super().__init__(f"{schema}: " + "; ".join(errors))
        self.schema = schema
        self.errors = errors
        self.fields = fields or []


@cache
def load_schema(name: str) -> dict[str, Any]:
    """Return the parsed schema ``schemas/<name>.json`` (e.g. ``envelope.v1``)."""
    return json.loads((SCHEMAS_DIR / f"{name}.json").read_text())


@cache
def _registry() -> Registry:
    """Every schema by its ``$id``, so schemas can ``$ref`` each other by file name."""
    resources = []
    for path in SCHEMAS_DIR.glob("*.json"):
        schema = load_schema(path.stem)
        resources.append((schema["$id"], Resource.from_contents(schema)))
    return Registry().with_resources(resources)


@cache
def _validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(load_schema(name), registry=_registry())


def field_path(error: ValidationError) -> str:
    """Where the error is, e.g. ``secrets.0.secret`` (``(root)`` for the document itself)."""
    return ".".join(str(part) for part in error.absolute_path) or "(root)"


def describe_error(error: ValidationError) -> str:
    """One line naming the field and the reason, e.g. ``data.type: 'X' does not match …``."""
    return f"{field_path(error)}: {error.message}"


def validate(name: str, document: Any) -> None:
    """Raise :class:`SchemaError` listing every violation of schema ``name``."""
    errors = sorted(_validator(name).iter_errors(document), key=lambda e: list(e.absolute_path))
    if errors:
        raise SchemaError(name, [describe_error(e) for e in errors],
                          [field_path(e) for e in errors])


@cache
def _fast_validator(name: str) -> jsonschema_rs.Validator:
    """Schema ``name`` compiled by ``jsonschema-rs``, its references resolved from this
    package's schemas only (never fetched), formats not asserted (as :func:`validate`)."""
    schemas = [load_schema(path.stem) for path in SCHEMAS_DIR.glob("*.json")]
    registry = jsonschema_rs.Registry([(schema["$id"], schema) for schema in schemas])
    return jsonschema_rs.validator_for(load_schema(name), registry=registry,
                                       validate_formats=False, offline=True)


def check(name: str, document: Any) -> None:
    """:func:`validate` at a fraction of the cost: ``jsonschema-rs`` passes valid documents;
    only a refused one is validated by ``jsonschema``, which decides and raises
    :class:`SchemaError` with the exact messages.

    ``jsonschema-rs`` may refuse what ``jsonschema`` accepts (its ``$`` does not match
    before a final newline; it cannot read a string holding a lone surrogate, which JSON
    may encode, nor a non-JSON value): ``jsonschema`` then has the last word.
    """
    try:
        valid = _fast_validator(name).is_valid(document)
    except ValueError:
        valid = False
    if not valid:
        validate(name, document)
