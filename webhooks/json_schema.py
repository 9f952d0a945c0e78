"""JSON Schemas (``webhooks/schemas/``, package data): loading and precise validation errors.

:func:`validate` runs ``jsonschema`` and names every violation; it costs hundreds of
microseconds per document. :func:`check` is the hot-path way in: a checker compiled
from the same schema (:func:`flat_object_checker`) decides valid documents in a few
microseconds, and only a document it refuses goes through :func:`validate`, which
builds the exact error message.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

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


# JSON Schema type names of the flat-object subset, as jsonschema decides them.
_TYPE_CHECKS: dict[str, Callable[[Any], bool]] = {
    "string": lambda value: isinstance(value, str),
    "object": lambda value: isinstance(value, dict),
    "array": lambda value: isinstance(value, list),
}
# Keywords a property of a flat-object schema may use; anything else is refused when the
# checker is built, so a schema change cannot make the checker quietly more lenient.
_PROPERTY_KEYWORDS = {"type", "pattern", "minLength", "maxLength", "minItems", "maxItems",
                      "description", "$ref"}
_OBJECT_KEYWORDS = {"$schema", "$id", "title", "description", "type", "additionalProperties",
                    "required", "properties"}


def _resolve(node: dict[str, Any]) -> dict[str, Any]:
    """A property schema with its ``other.v1.json`` or ``other.v1.json#/a/b`` reference
    followed."""
    ref = node.get("$ref")
    if ref is None:
        return node
    document, _, pointer = ref.partition("#/")
    target: Any = load_schema(document.removesuffix(".json"))
    for part in filter(None, pointer.split("/")):
        target = target[part]
    return _resolve({**{k: v for k, v in node.items() if k != "$ref"}, **target})


def _property_check(name: str, node: dict[str, Any]) -> Callable[[Any], bool]:
    node = _resolve(node)
    unsupported = set(node) - _PROPERTY_KEYWORDS
    if unsupported:
        raise ValueError(f"{name}: keywords {sorted(unsupported)} not supported by the fast check")
    is_type = _TYPE_CHECKS[node["type"]]
    # jsonschema applies ``pattern`` with re.search (so ``$`` also matches before a final
    # newline): the same call here accepts exactly the same strings.
    search = re.compile(node["pattern"]).search if "pattern" in node else None
    low = node.get("minLength", node.get("minItems", 0))
    high = node.get("maxLength", node.get("maxItems"))

    def check_property(value: Any) -> bool:
        if not is_type(value):
            return False
        if search is not None and search(value) is None:
            return False
        return low <= len(value) and (high is None or len(value) <= high)
    return check_property


@cache
def flat_object_checker(name: str) -> Callable[[Any], bool]:
    """A fast yes/no check of schema ``name``, which must be a closed object of simple
    properties (type, pattern, length bounds, references to such properties).

    True means :func:`validate` would accept the document; False means it may not (ask
    :func:`validate` for the reasons). Raises ``ValueError`` for a schema outside that
    subset.
    """
    schema = load_schema(name)
    unsupported = set(schema) - _OBJECT_KEYWORDS
    if unsupported or schema.get("type") != "object" \
            or schema.get("additionalProperties") is not False:
        raise ValueError(f"{name}: not a closed flat object schema")
    checks = {prop: _property_check(f"{name}.{prop}", node)
              for prop, node in schema["properties"].items()}
    required = tuple(schema.get("required", ()))

    def check_object(document: Any) -> bool:
        if not isinstance(document, dict):
            return False
        for prop in required:
            if prop not in document:
                return False
        for prop, value in document.items():
            property_check = checks.get(prop)
            if property_check is None or not property_check(value):
                return False
        return True
    return check_object


@cache
def _fast_checker(name: str) -> Callable[[Any], bool] | None:
    """The compiled checker of schema ``name``; None when the schema is outside its subset
    (``jsonschema`` then decides alone, never a more lenient check)."""
    try:
        return flat_object_checker(name)
    except ValueError:
        return None


def check(name: str, document: Any) -> None:
    """:func:`validate` at a fraction of the cost for a flat-object schema: the compiled
    checker passes valid documents; only a refused one (or any document of a schema the
    checker does not cover) is validated by ``jsonschema``, which raises
    :class:`SchemaError` with the exact messages."""
    fast = _fast_checker(name)
    if fast is None or not fast(document):
        validate(name, document)
