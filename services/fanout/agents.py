"""The fanout's agents: what each consumed topic flows into.

Data flow::

    events ──match──▶ one task per endpoint, attempted at once ──▶ receiver
    deliveries (redeliver, recover, test) ──deliver──┘   │ failure
    retry.<tier> ──deliver── ◀───────────────────────────┘ ... ──▶ dlq
         ├─ rate-limited endpoints' tasks ──▶ deliveries
         └─ ordered endpoints' tasks ──▶ ordered ──one lane per endpoint──▶ receiver
                                                   every attempt ──▶ attempts

The topics after ``events`` are keyed by endpoint id: one worker holds an endpoint's
partition of each, and makes every attempt read from them (see
:func:`webhooks.topics.uneven_partitions`).

Agents consume with manual acknowledgement (``stream.noack()``): each message is
handed to the :class:`EndpointDispatcher` (an event as its matched tasks) and the
agent moves straight on, so one slow endpoint or one waiting retry never holds up the
stream. :class:`OrderedAcks` acknowledges each partition's
messages in offset order once their outcome is durable, so Faust commits only
offsets whose work is done. (Faust's own commit bookkeeping assumes acks arrive in
order, which is why ``concurrency=`` on agents is not used.)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import faust

from services.fanout.dispatch import AckSlot, OrderedAcks
from services.fanout.endpoint_view import EndpointView
from services.fanout.ordered import OrderedLanes
from services.fanout.worker import DIRECT_HEADER, FanoutWorker
from webhooks import garbage_collection, tracing
from webhooks.delivery import DeliveryTask
from webhooks.envelope import Envelope
from webhooks.topics import Topics

log = logging.getLogger(__name__)

T = TypeVar("T")

VIEW_READY_LOG_EVERY = 30.0

YIELD_EVERY = 16
"""Records an agent takes before it lets the event loop run other work."""

RAW: dict[str, Any] = {"key_type": bytes, "value_type": bytes,
                       "key_serializer": "raw", "value_serializer": "raw"}
"""Topic options: records reach the agents as the exact bytes, parsed by the contracts."""


def add_agents(app: faust.App, topics: Topics, worker: FanoutWorker, view: EndpointView,
               acks: OrderedAcks, lanes: OrderedLanes, tier_max_waiting: int) -> None:
    """Declare the agents on ``app``: events -> match; deliveries and each retry tier ->
    deliver; ordered -> the ordered endpoints' lanes.

    ``tier_max_waiting`` bounds the unacknowledged tasks held per retry tier, and those
    held by the lanes.
    """

    async def view_ready() -> None:
        # Until the views caught up nothing is consumed (and /healthz says 503): the
        # endpoints to match and deliver to, and the failure streaks saved before a restart.
        followers = [view] + ([worker.health.saved] if worker.health.saved else [])
        for follower in followers:
            while not await asyncio.to_thread(follower.wait_ready, VIEW_READY_LOG_EVERY):
                log.warning("still waiting for %s to catch up", follower.topic)
        garbage_collection.tune()  # what start-up loaded stays out of every collection

    @app.agent(app.topic(topics.events, **RAW))
    async def match(stream: faust.StreamT) -> None:
        await view_ready()
        async for slot, envelope, trace in _readable(stream, acks, Envelope.from_json, "event"):
            worker.fan_out(envelope, on_durable=lambda slot=slot: acks.done(slot),
                           cancelled=lambda slot=slot: slot.cancelled, trace=trace)

    async def deliver(stream: faust.StreamT, topic: str, max_waiting: int | None) -> None:
        await view_ready()
        async for slot, task, trace in _readable(stream, acks, DeliveryTask.from_json,
                                                 "delivery task", skip_header=DIRECT_HEADER):
            worker.accept(task, on_durable=lambda slot=slot: acks.done(slot),
                          cancelled=lambda slot=slot: slot.cancelled, trace=trace)
            # Memory bound for a tier: past the limit this agent stops reading (Faust then
            # pauses fetching the tier's partitions) until held tasks come due. Other
            # tiers and fresh deliveries have their own agents and keep flowing.
            while max_waiting is not None and acks.pending_where(
                    lambda tp: tp.topic == topic) >= max_waiting:
                await asyncio.sleep(0.2)

    def deliver_agent(topic: str, max_waiting: int | None) -> None:
        async def agent(stream: faust.StreamT) -> None:
            await deliver(stream, topic, max_waiting)

        app.agent(app.topic(topic, **RAW), name=f"deliver-{topic}")(agent)

    @app.agent(app.topic(topics.ordered, **RAW), name=f"deliver-{topics.ordered}")
    async def deliver_ordered(stream: faust.StreamT) -> None:
        await view_ready()
        async for slot, task, trace in _readable(stream, acks, DeliveryTask.from_json,
                                                 "ordered task"):
            lanes.accept(task, on_durable=lambda slot=slot: acks.done(slot),
                         cancelled=lambda slot=slot: slot.cancelled, trace=trace)
            while acks.pending_where(lambda tp: tp.topic == topics.ordered) >= tier_max_waiting:
                await asyncio.sleep(0.2)  # a paused or failing endpoint's backlog waits in Kafka

    deliver_agent(topics.deliveries, None)
    for tier in topics.retry_tiers:
        deliver_agent(topics.retry(tier), tier_max_waiting)

    @app.on_partitions_revoked.connect
    async def on_revoked(app: faust.App, revoked: set[Any], **kwargs: Any) -> None:
        # The next owner consumes these again from the committed offset; tasks of these
        # partitions still waiting here are cancelled so that they are not sent twice.
        acks.forget(set(revoked))
        # Another worker may now see these endpoints' attempts: continue from saved streaks.
        worker.health.reset()


async def _readable(stream: faust.StreamT, acks: OrderedAcks, parse: Callable[[bytes], T],
                    what: str, skip_header: str | None = None
                    ) -> AsyncIterator[tuple[AckSlot, T, tracing.Trace | None]]:
    """The stream's records, parsed, each with its acknowledgement slot (in offset order)
    and, with traces on, the trace its headers carry; records carrying
    ``skip_header`` are acknowledged unread (their work is done elsewhere).

    The platform wrote every record; one that cannot be parsed can never be handled, and
    stopping on it would stall its partition forever, so it is logged and acknowledged.
    """
    handled = 0
    async for event in stream.noack().events():
        handled += 1
        if handled % YIELD_EVERY == 0:
            # Faust hands over buffered records without returning to the event loop; a
            # long run of them would hold up the HTTP attempts in flight meanwhile.
            await asyncio.sleep(0)
        slot = acks.track(event.message.tp, event.ack)
        if skip_header is not None and skip_header in event.headers:
            acks.done(slot)
            continue
        try:
            record = parse(event.value)
        except Exception:
            log.exception("skipping unreadable %s at %s", what, event.message.tp)
            acks.done(slot)
            continue
        yield slot, record, tracing.Trace.of(tracing.extract(event.headers)) \
            if tracing.tracer else None
