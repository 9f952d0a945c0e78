"""The retry schedule: a list of delays, one Kafka topic per tier, with jitter."""

from __future__ import annotations

import random
from dataclasses import dataclass

from webhooks.durations import format_duration, parse_duration


@dataclass(frozen=True)
class Tier:
    """One retry tier: its place in the schedule, its topic name part and its delay."""

    index: int
    name: str
    delay: float


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

    def __str__(self) -> str:
        """The schedule as ``WEBHOOKS_RETRY_SCHEDULE`` spells it: ``1m,5m,30m``."""
        return ",".join(format_duration(delay) for delay in self.delays)

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
    def tiers(self) -> tuple[Tier, ...]:
        """Every tier, in order."""
        return tuple(Tier(index=index, name=name, delay=delay)
                     for index, (name, delay) in enumerate(zip(self.tier_names, self.delays,
                                                               strict=True)))

    @property
    def max_attempts(self) -> int:
        """Attempts in all: the immediate one and one after each tier."""
        return len(self.delays) + 1

    def tier_before(self, attempt: int) -> Tier | None:
        """The tier a task waits in before 1-based ``attempt``; None past the last tier.

        Attempt ``n >= 2`` waits in tier ``n - 2``. Attempt 1 is due at once, so a task
        parked before its first attempt (its endpoint's queue was full) waits in the first.
        """
        index = max(attempt - 2, 0)
        tiers = self.tiers
        return tiers[index] if index < len(tiers) else None

    def jittered(self, delay: float, rng: random.Random | None = None) -> float:
        """``delay`` seconds moved by up to ±``jitter`` of itself, so retries spread out."""
        spread = delay * self.jitter
        return max(0.0, delay + (rng or random).uniform(-spread, spread))

    def delay_before(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before 1-based ``attempt`` (``>= 2``), jittered by ±``jitter``."""
        tier = self.tier_before(attempt)
        if tier is None:
            raise ValueError(f"no retry tier before attempt {attempt} "
                             f"(the schedule allows {self.max_attempts})")
        return self.jittered(tier.delay, rng)
