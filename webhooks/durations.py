"""Human-readable durations: ``500ms``, ``30s``, ``5m``, ``2h``, ``1d``."""

from __future__ import annotations

import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")


def parse_duration(text: str | float | int) -> float:
    """Return the duration in seconds; a bare number is taken as seconds."""
    if isinstance(text, int | float):
        if text < 0:
            raise ValueError(f"duration must not be negative: {text!r}")
        return float(text)
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"not a duration: {text!r} (expected e.g. 500ms, 30s, 5m, 2h, 1d)")
    value, unit = match.groups()
    return float(value) * _UNITS[unit or "s"]


def format_duration(seconds: float) -> str:
    """Return the shortest exact spelling of ``seconds`` (``90`` -> ``90s``, ``3600`` -> ``1h``)."""
    for unit in ("d", "h", "m", "s"):
        size = _UNITS[unit]
        if seconds >= size and float(seconds / size).is_integer():
            return f"{int(seconds / size)}{unit}"
    return f"{int(round(seconds * 1000))}ms"
