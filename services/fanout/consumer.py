"""The worker's Kafka consumer: Faust's aiokafka consumer with two changes.

* Acknowledged work on partitions being revoked is committed before a rebalance forgets
  it (:meth:`FanoutConsumer.on_partitions_revoked`).
* A message is handed to its stream at once when the stream has room
  (:meth:`FanoutConsumer.wait_first`), instead of through four new tasks per message.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Coroutine
from typing import Any

from faust.transport.drivers.aiokafka import Consumer as AIOKafkaConsumer
from faust.types import TP
from mode.services import WaitArgT, WaitResults
from mode.utils.times import Seconds

log = logging.getLogger(__name__)

YIELD_EVERY = 16
"""Messages handed over at once before the event loop runs other work."""

COMMIT_BEFORE_REBALANCE_TIMEOUT = 5.0
"""How long the commit before a rebalance may take (seconds). The group waits for this
worker meanwhile; a commit that cannot finish (its coordinator gone with a broker) must
not keep the worker out of the group, and the next owner redoes what it would have saved."""


class FanoutConsumer(AIOKafkaConsumer):
    """Faust's consumer, committing before a rebalance and handing messages over eagerly."""

    _handed_over = 0
    """Messages handed over at once (:meth:`wait_first`)."""

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        """Commit what was acknowledged on ``revoked`` before Faust forgets it.

        Faust commits every ``broker_commit_interval`` (1 s) and drops the
        acknowledgements of revoked partitions at a rebalance (a worker joining or
        leaving, as in every rollout), so whatever was done since the last commit was done
        again by the next owner: up to a second of deliveries sent twice, per worker and
        rebalance. The commit is bounded (:data:`COMMIT_BEFORE_REBALANCE_TIMEOUT`).
        """
        try:
            await asyncio.wait_for(self.commit(revoked), COMMIT_BEFORE_REBALANCE_TIMEOUT)
        except Exception:  # e.g. the group moved on already: the next owner redoes it
            log.warning("commit before a rebalance failed", exc_info=True)
        await super().on_partitions_revoked(revoked)

    async def wait_first(self, *coros: WaitArgT, timeout: Seconds | None = None
                         ) -> WaitResults:
        """The first of ``coros`` to finish, trying the first one at once.

        Faust's loop hands every message to its stream through
        ``wait_first(callback(message), suspend_flow.wait())``, a race that mode runs as
        four new tasks (one each for "stopped" and "crashed" too), then cancels three of
        them: with the stack under a Kafka intake load, the worker took 81-89 µs of CPU
        per event matching no endpoint this way and 43-49 µs with this shortcut. The
        hand-over finishes without waiting whenever the stream's buffer has room, so it
        is first run a step here: finished, it won the race (the others are not
        started); otherwise the race goes on as mode runs it, the hand-over resumed
        where it stopped. With flow suspended (a rebalance), or the consumer stopping,
        mode's race runs from the start.
        """
        first = coros[0] if coros else None
        if (not inspect.iscoroutine(first) or self.suspend_flow.is_set()
                or self._stopped.is_set() or self._crashed.is_set()):
            return await super().wait_first(*coros, timeout=timeout)
        try:
            yielded = first.send(None)
        except StopIteration as finished:
            for other in coros[1:]:
                if inspect.iscoroutine(other):
                    other.close()  # never started
            self._handed_over += 1
            if self._handed_over % YIELD_EVERY == 0:
                # A message per loop turn before; now a run of them would hold up the
                # stream's agent and the attempts in flight.
                await asyncio.sleep(0)
            return WaitResults([first], [finished.value], False)
        return await super().wait_first(resumed(first, yielded), *coros[1:], timeout=timeout)


async def resumed(coro: Coroutine[Any, Any, Any], yielded: Any) -> Any:
    """Run ``coro`` on from where it stopped after a step that yielded ``yielded`` (what
    an asyncio task would do with it): ``coro``'s result, or its exception."""
    while True:
        try:
            if yielded is None:  # a bare yield (asyncio.sleep(0))
                await asyncio.sleep(0)
            else:
                # What a task does with the future its coroutine yielded; awaiting a
                # future still marked "blocking" is refused as a misused await.
                yielded._asyncio_future_blocking = False
                await yielded
        except BaseException as exc:  # cancelled included: ``coro`` decides what follows
            try:
                yielded = coro.throw(exc)
            except StopIteration as finished:
                return finished.value
        else:
            try:
                yielded = coro.send(None)
            except StopIteration as finished:
                return finished.value
