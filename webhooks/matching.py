"""Event-type filters of endpoints: exact types, prefix wildcards (``order.*``) and ``*``."""

from __future__ import annotations

import re
from collections.abc import Iterable

FILTER_PATTERN = r"^(\*|[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*(\.\*)?)$"
_FILTER = re.compile(FILTER_PATTERN)


def is_valid_filter(pattern: str) -> bool:
    """True for ``*``, ``order.*``, ``order.shipped`` and the like."""
    return bool(_FILTER.fullmatch(pattern))  # fullmatch: a bare "$" lets a final newline pass


def type_matches(pattern: str, event_type: str) -> bool:
    """``order.*`` matches ``order.shipped`` and ``order.line.added``, not ``order``."""
    if pattern == "*":
        return True
    if pattern.endswith(".*"):
        return event_type.startswith(pattern[:-1])
    return pattern == event_type


def matches_any(patterns: Iterable[str], event_type: str) -> bool:
    return any(type_matches(pattern, event_type) for pattern in patterns)
