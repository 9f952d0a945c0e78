"""Ordered endpoints: their tasks one at a time, in the order they were appended.

An endpoint with ``ordered: true`` gets its tenant's events in append order. The events
of a tenant are appended to one partition of the events topic, and the fanout matches
them in offset order; an ordered endpoint's task is then written to the ``ordered``
topic, keyed by endpoint id (so one endpoint's tasks are in one partition, in that
order). This module delivers them: one :class:`OrderedLanes` lane per endpoint takes its
tasks in the order consumed and sends the next only once the previous one is delivered
or dead-lettered. A failed attempt is retried *in place*, after the retry schedule's
delay, while the tasks behind it wait; it never goes to a retry tier topic, where later
tasks could overtake it.

Each task stays unacknowledged until its final outcome is durable, and the partition's
offsets are committed in order (:class:`~services.fanout.dispatch.OrderedAcks`). After
a crash or a rebalance the next owner reads the endpoint's tasks again from the first
unfinished one: a task whose attempt was made but not recorded is sent again (same
``webhook-id``), and the order of first deliveries is the append order. A task retried
in place starts its schedule again after a restart (its attempt count is in memory).

A paused ordered endpoint's lane waits (nothing sent, nothing dropped); its tasks wait
in memory up to the fanout's limit and beyond it on the ordered topic, within the
topic's retention (``WEBHOOKS_RETENTION_DAYS``).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from services.fanout.dispatch import until_durable
from services.fanout.worker import FanoutWorker
from webhooks import tracing
from webhooks.delivery import DeliveryTask
from webhooks.envelope import utcnow

log = logging.getLogger(__name__)

# How often a waiting lane looks again: at a paused endpoint, at a revoked partition.
RECHECK_SECONDS = 0.5


@dataclass
class _Queued:
    task: DeliveryTask
    on_durable: Callable[[], None]
    cancelled: Callable[[], bool]
    trace: tracing.Trace | None


class OrderedLanes:
    """One lane per ordered endpoint, each sending its tasks one at a time."""

    def __init__(self, worker: FanoutWorker) -> None:
        self._worker = worker
        self._lanes: dict[str, deque[_Queued]] = {}
        self._runners: set[asyncio.Task[None]] = set()
        self._closing = False

    def accept(self, task: DeliveryTask, on_durable: Callable[[], None],
               cancelled: Callable[[], bool], trace: tracing.Trace | None = None) -> None:
        """Queue ``task`` behind its endpoint's earlier ones; ``on_durable`` runs once its
        final outcome (delivered, dead-lettered, dropped) is in Kafka. ``trace``: the
        context its attempts continue (traces on)."""
        if self._closing:
            return  # the worker is stopping: the task stays unacknowledged
        lane = self._lanes.get(task.endpoint_id)
        if lane is None:
            lane = self._lanes[task.endpoint_id] = deque()
            runner = asyncio.get_running_loop().create_task(self._run(task.endpoint_id, lane))
            self._runners.add(runner)
            runner.add_done_callback(self._runners.discard)
        lane.append(_Queued(task, on_durable, cancelled, trace))

    @property
    def queued(self) -> int:
        """Tasks waiting in lanes (the head of each included)."""
        return sum(len(lane) for lane in self._lanes.values())

    async def drain(self, timeout: float) -> None:
        """Let each lane finish the attempt under way (and record it), within ``timeout``
        seconds, and start no other; then :meth:`close`. Tasks not attempted stay
        unacknowledged, for the partitions' next owner."""
        self._closing = True
        if self._runners:
            await asyncio.wait(set(self._runners), timeout=timeout)
        await self.close()

    async def close(self) -> None:
        """Stop every lane; unfinished tasks stay unacknowledged (read again later)."""
        for runner in list(self._runners):
            runner.cancel()
        if self._runners:
            await asyncio.gather(*self._runners, return_exceptions=True)
        self._lanes.clear()

    async def _run(self, endpoint_id: str, lane: deque[_Queued]) -> None:
        try:
            while lane and not self._closing:
                head = lane[0]
                if head.cancelled():  # its partition went to another worker
                    lane.popleft()
                    continue
                endpoint = self._worker.view.get(endpoint_id)
                if endpoint is not None and endpoint.paused and not endpoint.disabled:
                    await asyncio.sleep(RECHECK_SECONDS)
                    continue
                if head.task.not_before is not None:
                    wait = (head.task.not_before - utcnow()).total_seconds()
                    if wait > 0:
                        await asyncio.sleep(min(wait, RECHECK_SECONDS))
                        continue
                if endpoint is not None and endpoint.rate_limit:
                    # The dispatcher's limiter: one budget with the endpoint's other tasks.
                    await self._worker.dispatcher.pace(endpoint_id, endpoint.rate_limit)
                again = await self._attempt(head.task, head.trace)
                if again is not None and not head.cancelled():
                    head.task = again  # retried in place, after its delay
                    continue
                lane.popleft()
                if not head.cancelled():
                    head.on_durable()
        finally:
            if self._lanes.get(endpoint_id) is lane:
                del self._lanes[endpoint_id]

    async def _attempt(self, task: DeliveryTask, trace: tracing.Trace | None
                       ) -> DeliveryTask | None:
        """One attempt of ``task``, its outcome made durable; the task to attempt next
        (a failure with retries left) or None (delivered, dead-lettered, dropped)."""
        retry: list[DeliveryTask] = []

        def again(next_task: DeliveryTask) -> None:
            retry[:] = [next_task]

        finish = await until_durable(
            lambda: self._worker.send(task, retry_in_place=again, trace=trace),
            "ordered delivery")
        await until_durable(finish, "recording an ordered attempt")
        return retry[0] if retry else None
