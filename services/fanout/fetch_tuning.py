"""How the worker's consumer fetches: two adjustments to Faust's aiokafka fetcher.

aiokafka keeps one fetch request in flight per broker and names in it every assigned
partition that is not paused or still being handed over; as soon as an answer comes,
the next request goes out. Faust offers no setting for either adjustment below, so both
reach its consumer thread's fetcher (``app.consumer._thread._consumer._fetcher``) once
partitions are assigned, and log a warning and leave aiokafka's behaviour where that
changed.

* :func:`bound_fetch_wait`: how long the broker holds a request that finds nothing new.
* :class:`TierFetchPacing`: the retry tiers are named in a request only every
  :func:`tier_fetch_interval`, not in every one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import faust

log = logging.getLogger(__name__)

FETCH_WAIT_MS = 50
"""The longest the broker holds the worker's fetch request when it has nothing new.

Faust fixes aiokafka's at 1,500 ms. A partition whose records are still being handed over
is left out of the next request; the request then covers only idle partitions (the retry
tiers, mostly) and the broker holds it the whole wait, while new events pile up on the
partition left out. Under a steady 200 events/s that added 1.5-3 s to every delivery
(p50 2.7 s -> 0.2-0.5 s with 50 ms); an idle worker pays for it with 20 empty fetches a
second (~0.01 core each for the worker and the broker)."""

TIER_FETCH_INTERVAL = 0.25
"""How often, at most, the retry tiers' partitions are named in a fetch request (seconds).

Under load a fetch request goes out for about every arriving event. With the default six
tiers, 72 of the worker's 108 partitions are retry tiers, mostly empty: the broker looked
each of them up, and aiokafka parsed an empty answer for each, every time (one tier
instead of six measured 0.35 -> 0.27 ms of fanout CPU and 0.20 -> 0.16 ms of broker CPU
per delivery). A tier's records wait a minute or more before they are due and are read
ahead of time, so a quarter of a second more before they are read costs nothing."""


def tier_fetch_interval(tier_delays: Iterable[float]) -> float:
    """How often the retry tiers are fetched: :data:`TIER_FETCH_INTERVAL`, or a tenth of
    the shortest tier's delay where that is shorter (schedules of seconds, as in tests)."""
    return min([TIER_FETCH_INTERVAL, *(delay / 10 for delay in tier_delays)])


def consumer_fetcher(app: faust.App) -> Any | None:
    """The aiokafka fetcher of ``app``'s consumer, or None where Faust or aiokafka
    changed how to reach it."""
    try:
        return app.consumer._thread._consumer._fetcher  # type: ignore[attr-defined]
    except AttributeError:
        return None


def bound_fetch_wait(fetcher: Any, wait_ms: int) -> bool:
    """Set the fetch wait of an aiokafka fetcher (see :data:`FETCH_WAIT_MS`); False where
    it has no such attribute."""
    if not hasattr(fetcher, "_fetch_max_wait_ms"):
        return False
    if fetcher._fetch_max_wait_ms != wait_ms:
        fetcher._fetch_max_wait_ms = wait_ms
        log.info("consumer fetch wait bounded to %d ms", wait_ms)
    return True


class TierFetchPacing:
    """Leaves the partitions of ``slow_topics`` out of a fetch request unless
    ``interval`` seconds passed since a request last named them.

    It wraps the fetcher's ``_get_actions_per_node(assignment)``, which builds the next
    requests from the assignment's partitions: between two tier fetches it sees an
    assignment without the slow topics. Every other decision (paused partitions, offset
    resets, records still being handed over) stays aiokafka's own.
    """

    def __init__(self, slow_topics: Iterable[str], interval: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.slow_topics = frozenset(slow_topics)
        self.interval = interval
        self.clock = clock
        self._next_slow = 0.0  # the first request names them all
        self._without: _Without | None = None  # of the current assignment

    def install(self, fetcher: Any) -> bool:
        """Wrap ``fetcher`` (once; later calls keep the first pacing); False where it has
        no ``_get_actions_per_node``."""
        original = getattr(fetcher, "_get_actions_per_node", None)
        if original is None:
            return False
        if getattr(original, "paced_by", None) is None:
            fetcher._get_actions_per_node = self.wrap(original)
            log.info("retry tiers are fetched every %.2f s at most", self.interval)
        return True

    def wrap(self, actions_per_node: Callable[[Any], tuple[Any, ...]]
             ) -> Callable[[Any], tuple[Any, ...]]:
        """``actions_per_node`` with the slow topics left out between their fetches."""

        def paced(assignment: Any) -> tuple[Any, ...]:
            now = self.clock()
            due = now >= self._next_slow
            requests, resets, timeout, invalid_metadata, resumes = actions_per_node(
                assignment if due else self.without_slow(assignment))
            if due and any(topic in self.slow_topics
                           for _node, request in requests for topic, _ in request.topics):
                self._next_slow = now + self.interval
            elif not due:
                # Wake up when they are due even if no other request answers by then.
                timeout = min(timeout, self._next_slow - now)
            return requests, resets, timeout, invalid_metadata, resumes

        paced.paced_by = self  # type: ignore[attr-defined]
        return paced

    def without_slow(self, assignment: Any) -> _Without:
        """``assignment`` without the slow topics (kept until the assignment changes:
        an aiokafka assignment's partitions never do)."""
        if self._without is None or self._without.assignment is not assignment:
            self._without = _Without(assignment, self.slow_topics)
        return self._without


class _Without:
    """An aiokafka assignment as the fetcher sees it, without the partitions of some
    topics."""

    def __init__(self, assignment: Any, topics: frozenset[str]) -> None:
        self.assignment = assignment
        self.tps = frozenset(tp for tp in assignment.tps if tp.topic not in topics)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.assignment, name)
