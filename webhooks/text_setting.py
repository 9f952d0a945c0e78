"""A settings value that is read from its text and written back as that text."""

from __future__ import annotations

from typing import Any, Self

from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema


class TextSetting:
    """Base of a typed setting parsed once from its environment text (:meth:`parse`) and
    serialised back to the same text (:meth:`to_setting`), so that a child process can be
    handed the same settings (``settings_env``)."""

    @classmethod
    def parse(cls, text: str) -> Self:
        """The value of a setting's text; raises ValueError naming what is wrong."""
        raise NotImplementedError

    def to_setting(self) -> str:
        """The text that :meth:`parse` reads back as this value."""
        raise NotImplementedError

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler
                                     ) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            lambda value: value if isinstance(value, cls) else cls.parse(str(value)),
            serialization=core_schema.plain_serializer_function_ser_schema(
                lambda value: value.to_setting()))
