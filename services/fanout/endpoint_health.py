"""Auto-disable: notice an endpoint that has been failing for too long.

An endpoint is disabled once *every* attempt for ``disable_after`` seconds has failed,
or, when ``disable_after_failures`` is positive, after that many consecutive failures.

The streak survives restarts and rebalances: once it has lasted ``save_every`` (a tenth
of ``disable_after``, at most a minute), the worker writes it to the compacted
endpoint-health topic (key: endpoint id, value: ``{"since": …, "failures": …}``) and
writes it again every ``save_every``; the first success after a saved streak, or the
disable, writes a tombstone. Every worker follows that topic (:class:`StreakView`), and a
tracker that holds nothing for an endpoint continues the saved streak. Writes happen only
on these transitions, never per attempt, so a flapping endpoint costs nothing. What a
restart can lose is the part of a streak not yet saved: at most ``save_every``, which
only delays a disable.

Tasks of one endpoint share a partition, so one worker sees all of them; after a
rebalance the tracker forgets what it held (:meth:`FailureTracker.reset`) and continues
from the saved streaks, since another worker may have seen successes meanwhile.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field

from webhooks.compacted_topic import CompactedTopicFollower
from webhooks.kafka import KafkaConnection

MAX_SAVE_EVERY = 60.0
"""Longest stretch of a streak that is kept only in memory (seconds)."""


@dataclass(frozen=True)
class SavedStreak:
    """A failure streak as written to the endpoint-health topic."""

    since: float
    failures: int

    def to_json(self) -> bytes:
        """The record's value."""
        return json.dumps({"since": self.since, "failures": self.failures}).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> SavedStreak:
        """Parse a record's value; raises ValueError, KeyError or TypeError if malformed."""
        document = json.loads(raw)
        return cls(since=float(document["since"]), failures=int(document["failures"]))


@dataclass(frozen=True)
class Verdict:
    """What one recorded attempt means for the endpoint.

    ``save`` is True when the durable streak changed: write ``saved`` to the
    endpoint-health topic (``None`` is a tombstone).
    """

    disable: bool = False
    save: bool = False
    saved: SavedStreak | None = None


@dataclass
class _Streak:
    since: float
    failures: int = 0
    saved_at: float | None = None  # when it was last written to the topic


class StreakView(CompactedTopicFollower):
    """Endpoint id -> :class:`SavedStreak`, from the compacted endpoint-health topic."""

    thread_name = "endpoint-health-view"
    stop_timeout = 5.0

    def __init__(self, connection: KafkaConnection, topic: str) -> None:
        super().__init__(connection, topic)
        self._streaks: dict[str, SavedStreak] = {}
        self._lock = threading.Lock()

    def get(self, endpoint_id: str) -> SavedStreak | None:
        """The saved streak of ``endpoint_id``, if it has one."""
        return self._streaks.get(endpoint_id)

    def apply_record(self, key: bytes | None, value: bytes | None, timestamp_ms: int) -> None:
        """Apply one record of the topic (keyless or malformed ones are skipped)."""
        if key is None:
            return
        endpoint_id = key.decode()
        with self._lock:
            if value is None:
                self._streaks.pop(endpoint_id, None)
                return
            try:
                self._streaks[endpoint_id] = SavedStreak.from_json(value)
            except (ValueError, KeyError, TypeError):
                self._log.error("skipping malformed endpoint-health record %s", endpoint_id)

    def reset(self, partitions: int) -> None:
        """Start over (the follower re-reads the topic from the beginning)."""
        with self._lock:
            self._streaks.clear()


@dataclass
class FailureTracker:
    """Consecutive-failure streaks per endpoint (timestamps are unix seconds).

    ``saved`` gives the durable streak of an endpoint (a :class:`StreakView`'s ``get``);
    it is consulted once per endpoint after each :meth:`reset`, because after that this
    tracker's own record is newer than what the view may not have read back yet.
    """

    disable_after: float
    disable_after_failures: int = 0
    saved: StreakView | None = None
    _streaks: dict[str, _Streak] = field(default_factory=dict)
    _consulted: set[str] = field(default_factory=set)

    @property
    def save_every(self) -> float:
        """How long a streak may grow before it is (again) written to the topic."""
        return min(MAX_SAVE_EVERY, self.disable_after / 10)

    def record(self, endpoint_id: str, succeeded: bool, now: float) -> Verdict:
        """Record one attempt: whether to disable the endpoint and whether to save."""
        streak = self._current(endpoint_id)
        if succeeded:
            self._streaks.pop(endpoint_id, None)
            if streak is not None and streak.saved_at is not None:
                return Verdict(save=True, saved=None)
            return Verdict()
        if streak is None:
            streak = self._streaks[endpoint_id] = _Streak(since=now)
        streak.failures += 1
        if 0 < self.disable_after_failures <= streak.failures \
                or now - streak.since >= self.disable_after:
            return Verdict(disable=True)
        if now - (streak.saved_at or streak.since) >= self.save_every:
            streak.saved_at = now
            return Verdict(save=True, saved=SavedStreak(streak.since, streak.failures))
        return Verdict()

    def forget(self, endpoint_id: str) -> bool:
        """Drop the streak (the endpoint was disabled or deleted); True if a saved streak
        must now be cleared with a tombstone."""
        streak = self._current(endpoint_id)
        self._streaks.pop(endpoint_id, None)
        return streak is not None and streak.saved_at is not None

    def reset(self) -> None:
        """Forget every streak held in memory: partitions moved, and the saved streaks are
        the ones to continue from."""
        self._streaks.clear()
        self._consulted.clear()

    def _current(self, endpoint_id: str) -> _Streak | None:
        streak = self._streaks.get(endpoint_id)
        if streak is None and self.saved is not None and endpoint_id not in self._consulted:
            self._consulted.add(endpoint_id)
            durable = self.saved.get(endpoint_id)
            if durable is not None:
                # saved_at: the streak is on the topic (a success must clear it there).
                streak = self._streaks[endpoint_id] = _Streak(
                    since=durable.since, failures=durable.failures, saved_at=durable.since)
        return streak
