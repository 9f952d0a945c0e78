"""Wiring of one ingest replica: producer, idempotency view, pipeline and Kafka intake."""

from __future__ import annotations

import logging

from services.ingest.idempotency_view import IdempotencyView
from services.ingest.kafka_intake import KafkaIntake
from services.ingest.metrics import IngestMetrics
from services.ingest.pipeline import IngestPipeline
from webhooks.acked_producer import AckedProducer
from webhooks.registry import Registry
from webhooks.settings import Settings
from webhooks.topics import Topics

log = logging.getLogger(__name__)

# How long start-up waits for the ledger before serving (requests get 503 until it is ready).
LEDGER_STARTUP_WAIT = 30.0


class IngestRuntime:
    """Everything an ingest replica runs besides HTTP routing; started by the app lifespan."""

    def __init__(self, settings: Settings, metrics: IngestMetrics,
                 ledger_startup_wait: float = LEDGER_STARTUP_WAIT) -> None:
        self.ledger_startup_wait = ledger_startup_wait
        self.settings = settings
        self.metrics = metrics
        self.topics = Topics.from_settings(settings)
        self.producer: AckedProducer | None = None
        self.view: IdempotencyView | None = None
        self.pipeline: IngestPipeline | None = None
        self.intake: KafkaIntake | None = None
        # Built here so that the app's API keys can consult it; followed from start().
        self.registry = Registry(settings.kafka, self.topics.registry)
        metrics.watch_index_memory(lambda: self.view.index_memory() if self.view else {})

    def start(self) -> None:
        """Start the producer and the ledger, wait (bounded) for the ledger, start intake."""
        timeout = self.settings.ingest_produce_timeout
        self.producer = AckedProducer(self.settings.kafka, timeout=timeout)
        self.registry.writer = self.producer  # for the keys' last-used times
        self.registry.start()
        self.view = IdempotencyView(self.settings.kafka, self.topics.idempotency,
                                    self.settings.idempotency_window,
                                    index_root=self.settings.idempotency_dir,
                                    records_read=self.metrics.ledger_records_read)
        self.view.start()
        if not self.view.wait_ready(self.ledger_startup_wait):
            log.warning("idempotency ledger not loaded after %ss; answering 503 until it is",
                        self.ledger_startup_wait)
        if not self.registry.wait_ready(self.ledger_startup_wait):
            log.warning("registry not loaded after %ss; managed API keys are refused until "
                        "it is", self.ledger_startup_wait)
        self.pipeline = IngestPipeline(self.topics, self.producer, self.view, self.metrics,
                                       claim_stale_after=3 * timeout,
                                       tenant_disabled=self.registry.is_disabled)
        if self.settings.ingest_kafka_intake:
            self.intake = KafkaIntake(self.settings, self.pipeline, self.producer, self.metrics)
            self.intake.start()

    def stop(self) -> None:
        """Stop intake first (it commits what it finished), then the ledger, then flush."""
        if self.intake is not None:
            self.intake.stop()
        if self.pipeline is not None:
            self.pipeline.fresh.flush()  # the producer's close below delivers them
        if self.view is not None:
            self.view.stop()
        self.registry.stop()
        if self.producer is not None:
            self.producer.close()
        # Drop the clients so librdkafka stops reconnecting once the app is gone.
        self.intake = self.view = self.pipeline = self.producer = None

    def ledger_ready(self) -> bool:
        """Health check: the idempotency ledger is loaded and followed."""
        return self.view is not None and self.view.ready

    def registry_ready(self) -> bool:
        """Health check: the tenant and key registry is loaded and followed."""
        return self.registry.ready

    def intake_running(self) -> bool:
        """Health check: the Kafka intake thread is alive (or intake is off)."""
        return self.intake is None or self.intake.running
