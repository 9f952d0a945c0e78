"""Auto-disable: notice an endpoint that has been failing for too long.

An endpoint is disabled once *every* attempt for ``disable_after`` seconds has failed,
or, when ``disable_after_failures`` is positive, after that many consecutive failures.
The streak lives in the worker's memory (tasks of one endpoint share a partition, so
one worker sees all of them); a restart or rebalance starts the clock again, which
only delays a disable.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class _Streak:
    since: float
    failures: int = 0


@dataclass
class FailureTracker:
    """Consecutive-failure streaks per endpoint (timestamps are unix seconds)."""

    disable_after: float
    disable_after_failures: int = 0
    _streaks: dict[str, _Streak] = field(default_factory=dict)

    def record(self, endpoint_id: str, succeeded: bool, now: float) -> bool:
        """Record one attempt; True when the endpoint should now be disabled."""
        if succeeded:
            self._streaks.pop(endpoint_id, None)
            return False
        streak = self._streaks.get(endpoint_id)
        if streak is None:
            streak = self._streaks[endpoint_id] = _Streak(since=now)
        streak.failures += 1
        if 0 < self.disable_after_failures <= streak.failures:
            return True
        return now - streak.since >= self.disable_after

    def forget(self, endpoint_id: str) -> None:
        """Drop the streak (the endpoint was disabled or deleted)."""
        self._streaks.pop(endpoint_id, None)
