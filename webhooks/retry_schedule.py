"""The retry schedule: a list of delays, one Kafka topic per tier, with jitter."""

from __future__ import annotations

import random
from dataclasses import dataclass

from webhooks.durations import format_duration, parse_duration


@dataclass(frozen=True)
class RetrySchedule:
    """Delays before each retry; attempt 1 is immediate, attempt ``n+2`` waits ``delays[n]``."""

    delays: tuple[float, ...]
    jitter: float = 0.1

    @classmethod
    def parse(cls, text: str, jitter: float = 0.1) -> RetrySchedule:
        """``"1m,5m,30m"`` -> three tiers; an empty string means no retries."""
        delays = tuple(parse_duration(item) for item in text.split(",") if item.strip())
        return cls(delays=delays, jitter=jitter)

    @property
    def tier_names(self) -> list[str]:
        """Stable names used in topic names: ``["1m", "5m", …]`` (duplicates get a suffix)."""
        names: list[str] = []
        for delay in self.delays:
            name = format_duration(delay)
            while name in names:
                name += "x"
            names.append(name)
        return names

    @property
    def max_attempts(self) -> int:
        return len(self.delays) + 1

    def delay_before(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before 1-based ``attempt`` (``>= 2``), jittered by ±``jitter``."""
        base = self.delays[attempt - 2]
        spread = base * self.jitter
        return max(0.0, base + (rng or random).uniform(-spread, spread))
