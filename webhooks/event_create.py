"""One validation path from a producer's raw event to an :class:`Envelope`.

HTTP (``POST /v1/events``, each batch item) and the Kafka intake topic all go through
:func:`parse_event_json` (bytes -> dict) and :func:`build_event` (dict -> envelope and
its idempotency aliases). Failures raise :class:`IntakeError`, which carries the HTTP
status, a short machine-readable ``reason`` (metrics label, ``rejection-code`` header)
and a ``detail`` naming the field and why.

Status codes: malformed JSON -> 400; schema violations (wrong types, unknown fields,
bad formats) and an admin key without ``tenant`` -> 422; a tenant key naming another
tenant -> 403; a body over the size limit -> 413 (checked by the caller before parsing).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import orjson
from opentelemetry.context import Context

from webhooks.envelope import (
    EARLIEST_CREATED,
    LATEST_CREATED,
    Envelope,
    parse_timestamp,
    to_utc,
)
from webhooks.json_schema import SchemaError, check

EVENT_CREATE_SCHEMA = "event_create.v1"
KNOWN_FIELDS = ("type", "data", "id", "created", "api_version", "tenant")
MAX_IDEMPOTENCY_KEY_LENGTH = 255
_LONG_DIGIT_RUN = re.compile(rb"[0-9]{19}")  # maybe an integer orjson cannot hold

# Readable explanations for pattern violations, instead of echoing the regex.
_FIELD_HINTS = {
    "type": "must be lower-case dot-separated resource.action, e.g. 'order.shipped'",
    "id": "must be 'evt_' followed by 1-64 letters, digits, '_' or '-'",
    "api_version": "must be a date like '2026-11-01'",
    "tenant": "must be 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit",
    "created": "must be an RFC 3339 timestamp like '2026-11-22T10:30:00.123456Z'",
}


class IntakeError(ValueError):
    """An event was refused; ``status`` is the HTTP answer, ``reason`` a short code."""

    def __init__(self, status: int, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class EventRequest:
    """A validated event: its envelope and the aliases a repeat of it would carry.

    ``aliases`` are ``id:<event id>`` when the producer chose the id (or the Kafka
    intake derived it) and ``key:<Idempotency-Key>`` when one was sent; a repeat matching
    any alias of an accepted event (same tenant, within the window) is answered with the
    original.

    ``claimed`` says whether another request may carry the same alias at this very
    moment (a producer-chosen id or key), so the alias must be claimed in the ledger
    before the append. An id the intake derived from a message's position is not: one
    consumer reads a partition at a time, so it is only remembered once appended, which
    is what recognises a re-read after a crash.

    ``trace`` is the trace context the append continues (:mod:`webhooks.tracing`), if
    traces are on.
    """

    envelope: Envelope
    aliases: tuple[str, ...]
    claimed: bool = True
    trace: Context | None = None

    @property
    def tenant(self) -> str:
        """The tenant the event belongs to."""
        return self.envelope.tenant


def too_large(limit: int) -> IntakeError:
    """The 413 refusal of a body over ``limit`` bytes."""
    return IntakeError(413, "too_large", f"body: larger than the limit of {limit} bytes")


def _refuse_constant(name: str) -> Any:
    # Python's json module reads NaN and Infinity, which JSON has not; no receiver should
    # get them in a signed body.
    raise ValueError(f"{name} is not a JSON number")


def parse_event_json(raw: bytes) -> Any:
    """Decode a JSON body; raises a 400 :class:`IntakeError` naming line and column.

    orjson decodes well-formed UTF-8 JSON several times faster than :mod:`json`; whatever
    it refuses (malformed input, but also what :mod:`json` reads and orjson does not:
    lone surrogates, UTF-16 bodies, 1e400) goes through :func:`json.loads`, so the result
    and every error message are :mod:`json`'s. So does a body with 19 digits in a row:
    orjson reads integers beyond 64 bits as floats, :mod:`json` exactly.
    """
    if _LONG_DIGIT_RUN.search(raw) is None:
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    try:
        return json.loads(raw, parse_constant=_refuse_constant)
    except UnicodeDecodeError as exc:
        raise IntakeError(400, "malformed_json", f"body: not UTF-8 ({exc.reason})") from exc
    except json.JSONDecodeError as exc:
        raise IntakeError(400, "malformed_json",
                          f"body: malformed JSON: {exc.msg} at line {exc.lineno} "
                          f"column {exc.colno}") from exc
    except ValueError as exc:  # NaN or Infinity
        raise IntakeError(400, "malformed_json", f"body: malformed JSON: {exc}") from exc


def _describe_schema_errors(errors: list[str]) -> str:
    described = []
    for error in errors:
        field, _, message = error.partition(": ")
        if field in _FIELD_HINTS and "does not match" in message:
            message = _FIELD_HINTS[field]
        described.append(f"{field}: {message}")
    return "; ".join(described)


def check_idempotency_key(key: str | None) -> str | None:
    """Validate an ``Idempotency-Key`` value (printable ASCII, at most 255 characters)."""
    if key is None:
        return None
    if not key or len(key) > MAX_IDEMPOTENCY_KEY_LENGTH or not key.isascii() \
            or not key.isprintable():
        raise IntakeError(422, "invalid_idempotency_key",
                          f"Idempotency-Key: must be 1-{MAX_IDEMPOTENCY_KEY_LENGTH} printable "
                          "ASCII characters")
    return key


def build_event(document: Any, *, caller_tenant: str | None, default_api_version: str,
                idempotency_key: str | None = None, event_id: str | None = None) -> EventRequest:
    """Validate a decoded event and wrap it in an envelope.

    ``caller_tenant`` is the API key's tenant, or ``None`` for an admin / trusted
    caller, who must then name the ``tenant`` in the document. ``event_id`` is the id
    to use when the document has none (the Kafka intake derives one per message so
    that re-reading a message after a crash yields the same event).
    """
    if not isinstance(document, dict):
        raise IntakeError(422, "schema", f"body: must be a JSON object, not {_json_type(document)}")
    unknown = sorted(set(document) - set(KNOWN_FIELDS))
    if unknown:
        raise IntakeError(422, "unknown_field",
                          f"{unknown[0]}: unknown field (allowed: {', '.join(KNOWN_FIELDS)})")
    try:
        check(EVENT_CREATE_SCHEMA, document)
    except SchemaError as exc:
        raise IntakeError(422, "schema", _describe_schema_errors(exc.errors)) from exc

    tenant = _resolve_tenant(document.get("tenant"), caller_tenant)
    created = document.get("created")
    moment = None
    if created is not None:
        try:
            moment = to_utc(parse_timestamp(created))
        except ValueError as exc:
            raise IntakeError(422, "schema", f"created: {_FIELD_HINTS['created']} ({exc})") from exc
        if not EARLIEST_CREATED <= moment <= LATEST_CREATED:
            raise IntakeError(422, "schema", "created: must lie between 1900-01-01 and "
                                             "2299-12-31 (UTC)")
    key = check_idempotency_key(idempotency_key)
    supplied_id = document.get("id")
    try:
        envelope = Envelope.create(type=document["type"], data=document["data"], tenant=tenant,
                                   api_version=document.get("api_version") or default_api_version,
                                   id=supplied_id or event_id, created=moment)
    except SchemaError as exc:
        # The request schema should already have caught it; never a 500 or a stuck intake.
        raise IntakeError(422, "schema", _describe_schema_errors(exc.errors)) from exc
    aliases = []
    if supplied_id or event_id:
        aliases.append(f"id:{envelope.id}")
    if key is not None:
        aliases.append(f"key:{key}")
    return EventRequest(envelope=envelope, aliases=tuple(aliases),
                        claimed=bool(supplied_id or key))


def item_too_large(item: Any, limit: int) -> bool:
    """Whether ``json.dumps(item)`` (the size a batch item is measured by) exceeds ``limit``
    bytes, without running :func:`json.dumps` on items far below it.

    ``json.dumps`` writes at most three bytes per byte of orjson's compact UTF-8 (escaped
    non-ASCII, spaces after separators, ``1e-05`` for ``1e-5``): items whose orjson form
    is under a sixth of the limit are certainly small enough.
    """
    try:
        if len(orjson.dumps(item)) * 6 <= limit:
            return False
    except TypeError:  # what only json writes: integers beyond 64 bits, lone surrogates
        pass
    return len(json.dumps(item).encode()) > limit


def _resolve_tenant(named: str | None, caller_tenant: str | None) -> str:
    if caller_tenant is None:
        if named is None:
            raise IntakeError(422, "tenant_required",
                              "tenant: required when the caller is not bound to a tenant "
                              "(admin key or Kafka intake)")
        return named
    if named is not None and named != caller_tenant:
        raise IntakeError(403, "tenant_forbidden",
                          "tenant: only admin keys may publish for another tenant")
    return caller_tenant


def _json_type(value: Any) -> str:
    names = {list: "an array", str: "a string", bool: "a boolean", int: "a number",
             float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)
