"""Running deliveries concurrently without losing the at-least-once guarantee.

Two pieces:

* :class:`OrderedAcks` — messages of one partition may *finish* in any order (a hanging
  endpoint next to a healthy one), but an offset may only be committed once everything
  before it is done. It releases acknowledgements strictly in offset order, per
  partition, so the consumer's commit position never passes unfinished work.
* :class:`EndpointDispatcher` — a per-endpoint queue with a bounded number of
  deliveries in flight per endpoint and overall, an optional per-endpoint rate limit,
  and timed wake-ups for tasks that are not due yet (retry tiers) so that no consumer
  ever sleeps while holding up the rest of its partition or topic.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

Finish = Callable[[], Awaitable[None]]
Job = Callable[[], Awaitable[Finish | None]]
"""A job does its limited part (the HTTP attempt) and may return a *finish* step (making
the outcome durable in Kafka) that runs after the job's slots are released, so that
broker round-trips do not count against an endpoint's in-flight limit."""


@dataclass(eq=False)
class AckSlot:
    """One consumed message awaiting its outcome."""

    partition: Hashable
    ack: Callable[[], Any]
    done: bool = False
    cancelled: bool = False
    """The partition was revoked: the message will be consumed again elsewhere."""


@dataclass
class OrderedAcks:
    """Per-partition acknowledgement in offset order."""

    _pending: dict[Hashable, deque[AckSlot]] = field(default_factory=dict)

    def track(self, partition: Hashable, ack: Callable[[], Any]) -> AckSlot:
        """Register a message in consumption order; ``ack`` runs once it and its elders are done."""
        slot = AckSlot(partition, ack)
        self._pending.setdefault(partition, deque()).append(slot)
        return slot

    def done(self, slot: AckSlot) -> int:
        """Mark ``slot`` finished; acknowledge the finished prefix. Returns how many acked."""
        slot.done = True
        queue = self._pending.get(slot.partition)
        released = 0
        while queue and queue[0].done:
            queue.popleft().ack()
            released += 1
        return released

    def forget(self, partitions: set[Hashable] | None = None) -> None:
        """Drop (and cancel) state of revoked partitions; their messages will be consumed again."""
        for partition in list(self._pending):
            if partitions is None or partition in partitions:
                for slot in self._pending.pop(partition):
                    slot.cancelled = True

    @property
    def pending(self) -> int:
        return sum(len(queue) for queue in self._pending.values())

    def pending_by_topic(self) -> dict[str, int]:
        """Unacknowledged messages per topic (partitions are Kafka TPs with ``.topic``)."""
        counts: dict[str, int] = {}
        for partition, queue in self._pending.items():
            topic = str(getattr(partition, "topic", partition))
            counts[topic] = counts.get(topic, 0) + len(queue)
        return counts

    def pending_where(self, selects: Callable[[Hashable], bool]) -> int:
        """Unacknowledged messages of the partitions ``selects`` picks."""
        return sum(len(queue) for partition, queue in self._pending.items()
                   if selects(partition))


class RateLimiter:
    """At most ``rate`` starts in any 1-second window, measured when each one starts, and
    at least ``1/rate`` seconds between two starts.

    Keeps the last ``rate`` start times; a start waits until the oldest of them is at
    least a second ago and the latest ``1/rate`` ago. The window bounds what a late timer
    would otherwise let catch up; the spacing keeps a backlog from going out in bursts of
    ``rate``, which delays on the way (a busy sender, the network) would bunch up further
    at the receiver.
    """

    WINDOW = 1.0

    def __init__(self, rate: int, starts: Iterable[float] = ()) -> None:
        self.rate = rate
        self._starts: deque[float] = deque(starts, maxlen=rate)
        # Waiters take turns (asyncio.Lock is FIFO): jobs start in the order they asked.
        self._turn = asyncio.Lock()

    def resized(self, rate: int) -> RateLimiter:
        """A limiter for ``rate`` that remembers this one's recent starts."""
        return RateLimiter(rate, self._starts)

    async def acquire(self, before_start: Callable[[], Awaitable[Any]] | None = None) -> None:
        """Wait until one more start keeps every window within ``rate``, then take it.

        ``before_start`` (e.g. taking a global concurrency slot) is awaited after the wait
        and before the start is recorded, holding the turn: the start is recorded when the
        job really starts, so a job delayed by it cannot bunch up with the next ones.
        """
        async with self._turn:
            # A loop, not one sleep: timers may fire a little early (clock resolution).
            while (wait := self._wait()) > 0:
                await asyncio.sleep(wait)
            if before_start is not None:
                await before_start()
            self._starts.append(time.monotonic())

    def _wait(self) -> float:
        """Seconds until one more start is allowed (0 or less: now)."""
        if not self._starts:
            return 0.0
        now = time.monotonic()
        wait = self._starts[-1] + self.WINDOW / self.rate - now
        if len(self._starts) == self.rate:
            wait = max(wait, self._starts[0] + self.WINDOW - now)
        return wait

    def busy_for(self) -> float:
        """Seconds until every recorded start is out of the window; after that a fresh
        limiter acts the same."""
        if not self._starts:
            return 0.0
        return max(0.0, self._starts[-1] + self.WINDOW - time.monotonic())


class EndpointDispatcher:
    """Runs jobs per endpoint: bounded in flight per endpoint and overall, optionally rate limited.

    Jobs of one endpoint start in submission order. A job or finish step that raises is
    retried with backoff (its message stays unacknowledged meanwhile), because the only
    failures that escape are the ones where an outcome could not be made durable.
    """

    def __init__(self, concurrency: int, per_endpoint: int,
                 max_queued: int | None = None) -> None:
        self._global = asyncio.Semaphore(concurrency)
        self._per_endpoint = per_endpoint
        self._max_queued = max_queued
        self._queues: dict[str, deque[Job]] = {}
        self._active: dict[str, int] = {}
        self._limiters: dict[str, RateLimiter] = {}
        """Kept while an endpoint is busy and for one window after, so that jobs arriving
        one by one are limited too; dropped once idle, when a fresh one would allow the same."""
        self._forgetting: dict[str, asyncio.TimerHandle] = {}
        """The pending check per endpoint whether its limiter can be dropped (at most one)."""
        self._runners: set[asyncio.Task[None]] = set()
        self._timers: set[asyncio.TimerHandle] = set()
        self.in_flight = 0
        self.waiting = 0
        """Jobs held until their due time."""
        self.closing = False
        """Set by :meth:`drain`: no job starts any more."""

    def submit(self, endpoint_id: str, job: Job, rate_limit: int | None = None,
               overflow: Finish | None = None) -> None:
        """Queue ``job`` for ``endpoint_id``; it starts as soon as limits allow.

        If ``max_queued`` jobs already wait for this endpoint (a slow or dead one), the
        ``overflow`` step runs instead, when given: memory holds a bounded backlog per
        endpoint and the rest waits elsewhere (in Kafka).
        """
        if self.closing:
            return  # the worker is stopping: its message stays unacknowledged
        queue = self._queues.get(endpoint_id)
        if (overflow is not None and self._max_queued is not None and queue is not None
                and len(queue) >= self._max_queued):
            self._start(until_durable(overflow, "deferring a task"))
            return
        self._set_rate_limit(endpoint_id, rate_limit)
        self._queues.setdefault(endpoint_id, deque()).append(job)
        if self._active.get(endpoint_id, 0) < self._per_endpoint:
            self._active[endpoint_id] = self._active.get(endpoint_id, 0) + 1
            self._start(self._drain(endpoint_id))

    def _start(self, coro: Coroutine[Any, Any, Any]) -> None:
        runner = asyncio.get_running_loop().create_task(coro)
        self._runners.add(runner)
        runner.add_done_callback(self._runners.discard)

    def submit_at(self, delay: float, endpoint_id: str, job: Job,
                  rate_limit: int | None = None, overflow: Finish | None = None) -> None:
        """:meth:`submit` after ``delay`` seconds without blocking the caller."""
        if delay <= 0 or self.closing:
            self.submit(endpoint_id, job, rate_limit, overflow)
            return
        self.waiting += 1
        handle: asyncio.TimerHandle

        def wake() -> None:
            self.waiting -= 1
            self._timers.discard(handle)
            self.submit(endpoint_id, job, rate_limit, overflow)

        handle = asyncio.get_running_loop().call_later(delay, wake)
        self._timers.add(handle)

    @property
    def queued(self) -> int:
        return sum(len(queue) for queue in self._queues.values())

    def queued_for(self, endpoint_id: str) -> int:
        """Jobs of ``endpoint_id`` waiting for a start (not those under way)."""
        return len(self._queues.get(endpoint_id, ()))

    async def drain(self, timeout: float) -> None:
        """Stop taking work and let the work under way finish, for a worker that stops.

        Jobs not started yet and jobs waiting for their due time are dropped: their
        messages stay unacknowledged, so the partitions' next owner consumes them again
        (nothing was sent). Attempts under way finish and their outcomes are made durable
        (then acknowledged, and committed by the consumer as it stops), within
        ``timeout`` seconds; whatever still runs then is cancelled (:meth:`close`).
        """
        self.closing = True
        for handle in list(self._timers):
            handle.cancel()
        self._timers.clear()
        self._forgetting.clear()
        self.waiting = 0
        for queue in self._queues.values():
            queue.clear()
        deadline = asyncio.get_running_loop().time() + timeout
        # A job that finishes starts its finish step as a runner of its own: wait again.
        while self._runners and (left := deadline - asyncio.get_running_loop().time()) > 0:
            await asyncio.wait(set(self._runners), timeout=left)
        if self._runners:
            log.warning("%d deliveries or records still unfinished after %.0f s; their "
                        "messages stay unacknowledged", len(self._runners), timeout)
        await self.close()

    async def close(self) -> None:
        """Cancel pending timers and running jobs (their messages stay unacknowledged)."""
        for handle in list(self._timers):
            handle.cancel()
        self._timers.clear()
        self._forgetting.clear()
        self.waiting = 0
        for runner in list(self._runners):
            runner.cancel()
        if self._runners:
            await asyncio.gather(*self._runners, return_exceptions=True)
        self._queues.clear()
        self._active.clear()
        self._limiters.clear()

    async def pace(self, endpoint_id: str, rate_limit: int) -> None:
        """Wait for a start within ``endpoint_id``'s ``rate_limit`` and take it, for an
        attempt made outside this dispatcher (an ordered endpoint's lane): every attempt
        at an endpoint on this worker shares one limiter."""
        self._set_rate_limit(endpoint_id, rate_limit)
        await self._limiters[endpoint_id].acquire()
        if endpoint_id not in self._active:
            self._forget_limiter_when_idle(endpoint_id)

    def _set_rate_limit(self, endpoint_id: str, rate_limit: int | None) -> None:
        if rate_limit is None:
            self._limiters.pop(endpoint_id, None)
        elif (limiter := self._limiters.get(endpoint_id)) is None:
            self._limiters[endpoint_id] = RateLimiter(rate_limit)
        elif limiter.rate != rate_limit:  # changed: the starts just made still count
            self._limiters[endpoint_id] = limiter.resized(rate_limit)

    async def _drain(self, endpoint_id: str) -> None:
        queue = self._queues[endpoint_id]
        try:
            while queue and not self.closing:
                job = queue.popleft()
                limiter = self._limiters.get(endpoint_id)
                if limiter is not None:  # its start is counted once it has a global slot
                    await limiter.acquire(before_start=self._global.acquire)
                else:
                    await self._global.acquire()
                try:
                    if self.closing:
                        break  # not started: its message stays unacknowledged
                    self.in_flight += 1
                    try:
                        finish = await until_durable(job, "delivery job")
                    finally:
                        self.in_flight -= 1
                finally:
                    self._global.release()
                if finish is not None:
                    self._start(until_durable(finish, "recording an attempt"))
        finally:
            self._active[endpoint_id] -= 1
            if not self._active[endpoint_id]:
                del self._active[endpoint_id]
                if not queue:
                    self._queues.pop(endpoint_id, None)
                    self._forget_limiter_when_idle(endpoint_id)

    def _forget_limiter_when_idle(self, endpoint_id: str) -> None:
        """Drop the idle endpoint's limiter once its last start has left the window."""
        limiter = self._limiters.get(endpoint_id)
        if limiter is None or endpoint_id in self._forgetting:
            return

        def forget() -> None:
            self._timers.discard(handle)
            del self._forgetting[endpoint_id]
            if endpoint_id in self._active or self._limiters.get(endpoint_id) is not limiter:
                return  # busy again (its drain will call us when idle) or replaced
            if limiter.busy_for() > 0:  # started again (a lane), or the timer fired early
                self._forget_limiter_when_idle(endpoint_id)
            else:
                del self._limiters[endpoint_id]

        handle = asyncio.get_running_loop().call_later(limiter.busy_for(), forget)
        self._timers.add(handle)
        self._forgetting[endpoint_id] = handle



async def until_durable(step: Callable[[], Awaitable[Any]], what: str) -> Any:
    """Run ``step`` until it succeeds, backing off (0.5 s doubling to 30 s) after each
    failure: its message stays unacknowledged meanwhile (Kafka down, say), never lost."""
    backoff = 0.5
    while True:
        try:
            return await step()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s failed; retrying in %.1fs", what, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 30.0)
