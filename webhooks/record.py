"""One base for the JSON records that travel between the services (topics, ClickHouse rows).

A :class:`JsonRecord` names its JSON Schema (``webhooks/schemas/<name>.json``) and has
two ways in:

- :meth:`JsonRecord.from_json`, the fast typed decoder (pydantic, no JSON Schema) for
  records the platform wrote itself, e.g. what the fanout reads for every delivery;
- :meth:`JsonRecord.validated` / :meth:`JsonRecord.from_dict`, which check the document
  against the schema first and raise :class:`~webhooks.json_schema.SchemaError` naming
  the fields, for data where it enters the system (endpoint records read from the
  endpoints topic, envelopes ingest builds).

and one way out, :meth:`JsonRecord.to_json`: compact JSON bytes in field order, written
by pydantic's serializer (Rust, ~10x faster than :func:`json.dumps`). The envelope is the
exception: its bytes are what is signed and delivered, written by :func:`json.dumps`
(whose spelling of floats, ``1e+100``, a golden test pins), so a task carrying an
envelope may spell its floats otherwise, but the body sent is always the envelope's own.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict

from webhooks.json_schema import check


class JsonRecord(BaseModel):
    """A record with one JSON form: parsed by :meth:`from_json`, written by :meth:`to_json`."""

    model_config = ConfigDict(extra="forbid")

    schema_name: ClassVar[str | None] = None
    """The schema's file name without ``.json`` (e.g. ``envelope.v1``); None for records
    without a schema of their own (parts of another record, internal records)."""

    @classmethod
    def from_json(cls, raw: bytes | str) -> Self:
        """Decode a record the platform wrote; raises :class:`pydantic.ValidationError`
        (a ``ValueError``) on malformed JSON or a field of the wrong type."""
        return cls.model_validate_json(raw)

    @classmethod
    def from_dict(cls, document: Any) -> Self:
        """Check a decoded document against the schema, then build the record; raises
        :class:`webhooks.json_schema.SchemaError`."""
        cls._validate_schema(document)
        return cls.model_validate(document)

    @classmethod
    def validated(cls, raw: bytes | str) -> Self:
        """:meth:`from_dict` of raw JSON: the checked way in for data from outside."""
        return cls.from_dict(json.loads(raw))

    def check_schema(self) -> Self:
        """Check this record's JSON form against its schema (raises ``SchemaError``)."""
        self._validate_schema(self.model_dump())
        return self

    def to_json(self) -> bytes:
        """Compact JSON bytes, non-ASCII as UTF-8."""
        return self.__pydantic_serializer__.to_json(self)

    @classmethod
    def _validate_schema(cls, document: Any) -> None:
        if cls.schema_name is None:
            raise TypeError(f"{cls.__name__} has no JSON Schema")
        check(cls.schema_name, document)
