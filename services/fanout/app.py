"""Fanout worker (Faust): matches events to endpoints and delivers them.

Data flow::

    events ──match──▶ deliveries ──deliver──▶ receiver
                          ▲   │ failure
                 retry.<tier> ◀┘ ... ──▶ dlq         every attempt ──▶ attempts

Agents consume with manual acknowledgement (``stream.noack()``): each message is
handed to the :class:`EndpointDispatcher` (or, for events, to a bounded set of
matching tasks) and the agent moves straight on, so one slow endpoint or one waiting
retry never holds up the stream. :class:`OrderedAcks` acknowledges each partition's
messages in offset order once their outcome is durable, so Faust commits only
offsets whose work is done. (Faust's own commit bookkeeping assumes acks arrive in
order, which is why ``concurrency=`` on agents is not used.)
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Iterable
from typing import Any

import faust
from prometheus_client import generate_latest

from services.fanout.deliverer import Deliverer
from services.fanout.dispatch import EndpointDispatcher, OrderedAcks
from services.fanout.endpoint_view import EndpointView
from services.fanout.metrics import FanoutMetrics
from services.fanout.worker import FanoutWorker
from webhooks.delivery import DeliveryTask
from webhooks.envelope import Envelope
from webhooks.kafka import kafka_reachable
from webhooks.settings import Settings
from webhooks.target_policy import TargetPolicy
from webhooks.topics import Topics

log = logging.getLogger(__name__)

MATCHING_IN_FLIGHT = 256
"""Events being matched (tasks being produced) at once per worker."""

VIEW_READY_LOG_EVERY = 30.0


def create_app(settings: Settings) -> faust.App:
    """Build the Faust app for ``settings``: agents plus /healthz and /metrics pages."""
    topics = Topics.from_settings(settings)
    app = faust.App(
        f"{settings.topic_prefix}-fanout",
        broker=[f"kafka://{server.strip()}" for server in settings.kafka_bootstrap.split(",")],
        broker_credentials=_broker_credentials(settings),
        store="memory://",
        web_port=settings.fanout_port,
        web_bind=settings.host,
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication,
        producer_acks=-1,
        producer_enable_idempotence=True,
        # Retry tasks are held for minutes; a rebalance must not wait for them to finish
        # (their offsets are uncommitted, so the next owner simply consumes them again).
        stream_wait_empty=False,
        # A killed worker's partitions move to the survivors within seconds.
        broker_session_timeout=10.0,
        broker_heartbeat_interval=3.0,
        consumer_auto_offset_reset="earliest",
        # Commit often: after a crash, everything since the last commit is delivered again.
        broker_commit_interval=1.0,
    )

    view = EndpointView(settings, topics.endpoints)
    dispatcher = EndpointDispatcher(settings.delivery_concurrency,
                                    settings.endpoint_max_in_flight,
                                    settings.endpoint_max_queued)
    acks = OrderedAcks()
    metrics = FanoutMetrics(in_flight=lambda: dispatcher.in_flight,
                            waiting=lambda: dispatcher.waiting,
                            lag=lambda: _consumer_lag(app),
                            unacked=acks.pending_by_topic)
    deliverer = Deliverer(
        TargetPolicy.create(settings.allow_private_targets,
                            production=settings.environment == "production"),
        timeout=settings.delivery_timeout,
        connections_per_endpoint=settings.endpoint_max_in_flight,
    )

    async def publish(topic: str, key: bytes, value: bytes | None) -> None:
        await app.producer.send_and_wait(topic, key, value, partition=None, timestamp=None,
                                         headers=None)

    worker = FanoutWorker(settings, view, deliverer, publish, dispatcher, metrics)

    raw: dict[str, Any] = {"key_type": bytes, "value_type": bytes,
                           "key_serializer": "raw", "value_serializer": "raw"}
    events_topic = app.topic(topics.events, **raw)

    async def view_ready() -> None:
        # Until the view caught up nothing is consumed (and /healthz says 503).
        while not await asyncio.to_thread(view.wait_ready, VIEW_READY_LOG_EVERY):
            log.warning("still waiting for the endpoints view to catch up")

    @app.agent(events_topic)
    async def match(stream: faust.StreamT) -> None:
        await view_ready()
        slots = asyncio.Semaphore(MATCHING_IN_FLIGHT)
        async for event in stream.noack().events():
            slot = acks.track(event.message.tp, event.ack)
            try:
                envelope = Envelope.from_json(event.value)
            except Exception:
                # Ingest validated it; an unreadable record can never match, and stopping
                # here would stall the partition forever.
                log.exception("skipping unreadable event at %s", event.message.tp)
                acks.done(slot)
                continue
            await slots.acquire()
            _spawn(_fan_out(worker, envelope, acks, slot, slots))

    async def deliver(stream: faust.StreamT, topic: str, max_waiting: int | None) -> None:
        await view_ready()
        async for event in stream.noack().events():
            slot = acks.track(event.message.tp, event.ack)
            try:
                task = DeliveryTask.from_json(event.value)
            except Exception:
                log.exception("skipping unreadable delivery task at %s", event.message.tp)
                acks.done(slot)
                continue
            worker.accept(task, on_durable=lambda slot=slot: acks.done(slot),
                          cancelled=lambda slot=slot: slot.cancelled)
            # Memory bound for a tier: past the limit this agent stops reading (Faust then
            # pauses fetching the tier's partitions) until held tasks come due. Other
            # tiers and fresh deliveries have their own agents and keep flowing.
            while max_waiting is not None and acks.pending_where(
                    lambda tp: tp.topic == topic) >= max_waiting:
                await asyncio.sleep(0.2)

    def deliver_agent(topic: str, max_waiting: int | None) -> None:
        async def agent(stream: faust.StreamT) -> None:
            await deliver(stream, topic, max_waiting)

        app.agent(app.topic(topic, **raw), name=f"deliver-{topic}")(agent)

    deliver_agent(topics.deliveries, None)
    for tier in topics.retry_tiers:
        deliver_agent(topics.retry(tier), settings.fanout_max_waiting)

    @app.on_partitions_revoked.connect
    async def on_revoked(app: faust.App, revoked: set[Any], **kwargs: Any) -> None:
        # The next owner consumes these again from the committed offset; tasks of these
        # partitions still waiting here are cancelled so that they are not sent twice.
        acks.forget(set(revoked))

    @app.task
    async def start_view() -> None:
        view.start()

    @app.on_before_shutdown.connect
    async def on_shutdown(app: faust.App, **kwargs: Any) -> None:
        await dispatcher.close()
        await deliverer.aclose()
        view.stop()

    @app.page("/healthz")
    async def healthz(web, request):  # type: ignore[no-untyped-def]
        ok = view.ready and await asyncio.to_thread(kafka_reachable, settings)
        return web.json({"status": "ok" if ok else "unavailable",
                         "endpoints": len(view), "view_ready": view.ready},
                        status=200 if ok else 503)

    @app.page("/metrics")
    async def metrics_page(web, request):  # type: ignore[no-untyped-def]
        # aiohttp refuses a charset in content_type; Prometheus accepts text/plain.
        return web.text(generate_latest(metrics.registry).decode(),
                        content_type="text/plain; version=0.0.4")

    return app


def _broker_credentials(settings: Settings) -> Any:
    """The same Kafka security settings the confluent clients use, for aiokafka."""
    protocol = settings.kafka_security_protocol.upper()
    if protocol == "PLAINTEXT":
        return None
    context = None
    if protocol in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(cafile=settings.kafka_ssl_ca_location)
    if protocol.startswith("SASL"):
        return faust.SASLCredentials(username=settings.kafka_sasl_username,
                                     password=settings.kafka_sasl_password,
                                     mechanism=settings.kafka_sasl_mechanism or "PLAIN",
                                     ssl_context=context)
    return faust.SSLCredentials(context)


_background: set[asyncio.Task[None]] = set()


def _spawn(coro: Any) -> None:
    task = asyncio.get_running_loop().create_task(coro)
    _background.add(task)
    task.add_done_callback(_background.discard)


async def _fan_out(worker: FanoutWorker, envelope: Envelope, acks: OrderedAcks, slot: Any,
                   slots: asyncio.Semaphore) -> None:
    backoff = 0.5
    try:
        while True:
            try:
                await worker.fan_out(envelope)
                break
            except asyncio.CancelledError:
                raise
            except Exception:  # not durable: keep the event unacknowledged and try again
                log.exception("fan-out of %s failed; retrying in %.1fs", envelope.id, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
        acks.done(slot)
    finally:
        slots.release()


def _consumer_lag(app: faust.App) -> Iterable[tuple[str, int, int]]:
    """(topic, partition, highwater - committed) for every assigned partition."""
    try:
        assignment = app.consumer.assignment()
    except Exception:  # not started yet
        return []
    committed = app.monitor.tp_committed_offsets
    lags = []
    for tp in assignment:
        try:
            highwater = app.consumer.highwater(tp)
        except Exception:
            continue
        if highwater is None:
            continue
        lags.append((tp.topic, tp.partition, max(0, highwater - (committed.get(tp) or 0))))
    return lags
