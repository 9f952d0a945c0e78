"""The fanout worker's Faust app: its configuration and the parts one worker holds.

:func:`create_app` configures the app (broker, consumer and producer settings), builds
the worker's parts and wires them together; the rest of the folder reads as the data
flow:

* ``agents.py`` — what each consumed topic flows into: events -> match -> deliveries;
  deliveries and each retry tier -> dispatch, acknowledged in offset order;
* ``worker.py`` — what one message leads to (:class:`FanoutWorker`);
* ``dispatch.py``, ``deliverer.py`` — how deliveries run and are sent;
* ``pages.py``, ``metrics.py`` — /healthz and /metrics;
* ``consumer.py``, ``fetch_tuning.py`` — how the worker's Kafka consumer differs from
  Faust's (commits before a rebalance, hand-over, fetch wait, the retry tiers' fetches).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from time import monotonic
from typing import Any

import faust
from faust.sensors import Monitor

from services.fanout.agents import add_agents
from services.fanout.consumer import FanoutConsumer
from services.fanout.deliverer import Deliverer
from services.fanout.dispatch import EndpointDispatcher, OrderedAcks
from services.fanout.endpoint_health import StreakView
from services.fanout.endpoint_view import EndpointView
from services.fanout.fetch_tuning import (
    FETCH_WAIT_MS,
    TierFetchPacing,
    bound_fetch_wait,
    consumer_fetcher,
    tier_fetch_interval,
)
from services.fanout.metrics import FanoutMetrics, consumer_lag
from services.fanout.ordered import OrderedLanes
from services.fanout.pages import add_pages
from services.fanout.worker import FanoutWorker
from webhooks.acked_producer import AckedProducer
from webhooks.kafka import KafkaConnection
from webhooks.registry import Registry
from webhooks.settings import Settings
from webhooks.target_policy import TargetPolicy
from webhooks.topics import Topics, partition_counts, uneven_partitions

log = logging.getLogger(__name__)

PRODUCE_TIMEOUT = 30.0
"""How long a write may wait for Kafka before it fails (and its message is retried)."""

DRAIN_RECORD_SECONDS = 10.0
"""On SIGTERM, how long beyond the delivery timeout the attempts under way may take to be
recorded in Kafka before the worker gives up on them (left unacknowledged); with the
default 15 s timeout, 25 s: within the chart's 60 s terminationGracePeriodSeconds."""

MIN_LINGER_MS = 10.0
"""The shortest time the worker's producer waits to fill a batch. Its writes (attempt
records, retry tier and DLQ records, endpoint updates) gate only the offset commit, made
every second, never a delivery; fuller batches mean fewer produce requests for the broker."""


class StreamClockMonitor(Monitor):
    """Faust's Monitor without its statistics of every message, which nothing here reads
    (the fanout's metrics are its own): only the time each partition's stream last took
    an event, which Faust's stalled-stream check reads. Its four hooks cost 0.3 µs per
    message instead of 2.3 (about 4 % of what the worker spends reading an event)."""

    def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
        """Nothing: Faust's counts and timestamps per message are not read."""

    def on_stream_event_in(self, tp: Any, offset: int, stream: Any, event: Any) -> None:
        """Only the partition's stream clock."""
        self.stream_inbound_time[tp] = monotonic()

    def on_stream_event_out(self, tp: Any, offset: int, stream: Any, event: Any,
                            state: dict[str, Any] | None = None) -> None:
        """Nothing: the event's run time is not read."""

    def on_message_out(self, tp: Any, offset: int, message: Any) -> None:
        """Nothing, as :meth:`on_message_in`."""


def create_app(settings: Settings) -> faust.App:
    """Build the Faust app for ``settings``: agents plus /healthz and /metrics pages."""
    topics = Topics.from_settings(settings)
    connection = settings.kafka
    app = faust.App(
        f"{settings.topic_prefix}-fanout",
        broker=[f"kafka://{server.strip()}" for server in connection.bootstrap.split(",")],
        broker_credentials=_broker_credentials(connection),
        store="memory://",
        web_port=settings.fanout_port,
        web_bind=settings.host,
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication,
        # Faust only consumes: every write goes through the confluent producer below.
        # Retry tasks are held for minutes; a rebalance must not wait for them to finish
        # (their offsets are uncommitted, so the next owner simply consumes them again).
        stream_wait_empty=False,
        # A killed worker's partitions move to the survivors within seconds.
        broker_session_timeout=10.0,
        broker_heartbeat_interval=3.0,
        consumer_auto_offset_reset="earliest",
        # Commit often: after a crash, everything since the last commit is delivered again.
        broker_commit_interval=1.0,
        # Faust's own partition assignor is used only with standby replicas (or tables);
        # with 0 it falls back to round robin. Its assignor gives one worker partition n of
        # every topic with the same partition count: all of one endpoint's tasks.
        table_standby_replicas=1,
        Monitor=StreamClockMonitor,
    )

    app.transport.Consumer = FanoutConsumer  # type: ignore[misc]
    view = EndpointView(connection, topics.endpoints)
    registry = Registry(connection, topics.registry)
    streaks = StreakView(connection, topics.endpoint_health)
    dispatcher = EndpointDispatcher(settings.delivery_concurrency,
                                    settings.endpoint_max_in_flight,
                                    settings.endpoint_max_queued)
    acks = OrderedAcks()
    metrics = FanoutMetrics(in_flight=lambda: dispatcher.in_flight,
                            waiting=lambda: dispatcher.waiting,
                            lag=lambda: consumer_lag(app),
                            unacked=acks.pending_by_topic)
    deliverer = Deliverer(
        TargetPolicy.create(settings.allow_private_targets,
                            production=settings.environment == "production"),
        timeout=settings.delivery_timeout,
        concurrency=settings.delivery_concurrency,
        keyring=settings.secrets_key,
        proxy=settings.delivery_proxy,
    )
    if settings.delivery_proxy is not None:  # str() masks the password
        log.info("every delivery goes through the proxy %s", settings.delivery_proxy)
    # Every Kafka write of the worker goes through one confluent-kafka producer: writes
    # are queued at once and acknowledged by delivery callbacks, so concurrent writes
    # travel in shared batches instead of one broker round trip each.
    producer = AckedProducer(connection, timeout=PRODUCE_TIMEOUT,
                             **{"linger.ms": max(connection.linger_ms, MIN_LINGER_MS)})

    def publish(topic: str, key: bytes, value: bytes | None,
                headers: list[tuple[str, bytes]] | None = None) -> asyncio.Future[None]:
        return producer.produce_async(topic, value, key=key, headers=headers)

    worker = FanoutWorker(settings, view, deliverer, publish, dispatcher, metrics, streaks,
                          tenant_erased=registry.is_deleted)
    lanes = OrderedLanes(worker)
    add_agents(app, topics, worker, view, acks, lanes,
               tier_max_waiting=settings.fanout_max_waiting)
    add_pages(app, settings, view, metrics)

    tier_pacing = TierFetchPacing(
        [topics.retry(tier) for tier in topics.retry_tiers],
        tier_fetch_interval(settings.retry_schedule.delays))

    @app.on_partitions_assigned.connect
    async def on_assigned(app: faust.App, assigned: set[Any], **kwargs: Any) -> None:
        fetcher = consumer_fetcher(app)
        if fetcher is None or not bound_fetch_wait(fetcher, FETCH_WAIT_MS):
            log.warning("cannot bound the consumer's fetch wait; deliveries may lag by up "
                        "to 1.5 s under load (Faust or aiokafka changed)")
        if fetcher is None or not tier_pacing.install(fetcher):
            log.warning("cannot pace the retry tiers' fetches; every fetch names them "
                        "(Faust or aiokafka changed)")

    @app.task
    async def start_view() -> None:
        view.start()
        streaks.start()
        registry.start()

    @app.task
    async def check_partitions() -> None:
        try:
            counts = await asyncio.to_thread(partition_counts, connection,
                                             topics.keyed_by_endpoint)
        except Exception:  # only a warning is at stake
            log.warning("could not read the partition counts of the topics", exc_info=True)
            return
        if (warning := uneven_partitions(counts)) is not None:
            log.warning(warning)

    @app.on_before_shutdown.connect
    async def on_shutdown(app: faust.App, **kwargs: Any) -> None:
        # SIGTERM (a rollout): Faust has stopped fetching. Attempts under way finish and
        # are recorded and acknowledged, nothing else starts (EndpointDispatcher.drain),
        # and what is acknowledged is committed before the worker leaves its group.
        drain = settings.delivery_timeout + DRAIN_RECORD_SECONDS
        await asyncio.gather(dispatcher.drain(drain), lanes.drain(drain))
        try:
            await app.consumer.commit()
        except Exception:  # not started, or the group moved on: the next owner redoes it
            log.warning("final commit failed", exc_info=True)
        log.info("stopping: deliveries under way finished, recorded and committed; "
                 "unacknowledged, for the next owner: %s", acks.pending_by_topic())
        await deliverer.aclose()
        await asyncio.to_thread(producer.close)
        view.stop()
        streaks.stop()
        registry.stop()

    return app


def _broker_credentials(connection: KafkaConnection) -> Any:
    """The same Kafka security settings the confluent clients use, for aiokafka."""
    protocol = connection.security_protocol.upper()
    if protocol == "PLAINTEXT":
        return None
    context = None
    if protocol in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(cafile=connection.ssl_ca_location)
    if protocol.startswith("SASL"):
        return faust.SASLCredentials(username=connection.sasl_username,
                                     password=connection.sasl_password,
                                     mechanism=connection.sasl_mechanism or "PLAIN",
                                     ssl_context=context)
    return faust.SSLCredentials(context)
