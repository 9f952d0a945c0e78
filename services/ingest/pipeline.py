"""Accepting validated events: idempotency claims, then the append to the events topic.

Shared by the HTTP handlers and the Kafka intake. :meth:`IngestPipeline.accept_many`
takes a list of :class:`EventRequest` and answers one :class:`AcceptResult` per item,
in order; it never raises for a single item's failure. An item is ``accepted`` only
after the broker acknowledged its envelope on the events topic (keyed by tenant, so
one tenant's events keep their order); it is ``replayed`` when it repeats an accepted
alias; otherwise it carries an :class:`IntakeError` (409 in progress, 503 unavailable).
See :mod:`services.ingest.idempotency_ledger` for the claim protocol.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Future
from dataclasses import dataclass

from services.ingest.idempotency_ledger import ClaimOutcome, LedgerRecord, new_claim_id
from services.ingest.idempotency_view import IdempotencyView, now_ms
from services.ingest.metrics import IngestMetrics
from webhooks.acked_producer import AckedProducer, Acknowledged
from webhooks.envelope import Envelope
from webhooks.event_create import EventRequest, IntakeError
from webhooks.topics import Topics

log = logging.getLogger(__name__)

ACCEPTANCE_POLL = 0.02  # seconds between looks at the ledger while a claimant appends


@dataclass(frozen=True)
class AcceptResult:
    """The outcome for one event: appended, replayed, or refused with a problem."""

    envelope: Envelope | None = None
    replayed: bool = False
    error: IntakeError | None = None

    @property
    def status(self) -> int:
        """202 appended, 200 replayed, or the problem's status."""
        if self.error is not None:
            return self.error.status
        return 200 if self.replayed else 202


def unavailable(detail: str) -> IntakeError:
    """A 503 refusal: Kafka did not acknowledge in time; the caller may retry."""
    return IntakeError(503, "unavailable", detail)


class IngestPipeline:
    """Claims, appends and acknowledgements for one ingest replica."""

    def __init__(self, topics: Topics, producer: AckedProducer, view: IdempotencyView,
                 metrics: IngestMetrics, claim_stale_after: float) -> None:
        self._topics = topics
        self._producer = producer
        self._view = view
        self._metrics = metrics
        self._stale_after_ms = int(claim_stale_after * 1000)
        # How long a claimant waits for its own follower to apply the claim.
        self._verdict_timeout = producer.timeout + 5.0

    async def accept_many(self, requests: list[EventRequest], source: str) -> list[AcceptResult]:
        """Accept each event at most once per alias; one result per request, in order."""
        if not self._view.ready:
            problem = unavailable("ingest is starting: the idempotency ledger is still loading "
                                  "from Kafka (or Kafka is unreachable); retry shortly")
            return self._count([AcceptResult(error=problem)] * len(requests), source)
        results: list[AcceptResult | None] = [None] * len(requests)
        to_append: dict[int, LedgerRecord] = {}
        claims: dict[int, tuple[LedgerRecord, Future[Acknowledged], Future[ClaimOutcome]]] = {}

        for index, request in enumerate(requests):
            # The event's own id always becomes an alias, so a later repeat that names the
            # id (e.g. one ingest generated for an Idempotency-Key request) is recognised.
            id_alias = f"id:{request.envelope.id}"
            aliases = request.aliases if id_alias in request.aliases \
                else (*request.aliases, id_alias)
            record = LedgerRecord(kind="claim", claim_id=new_claim_id(), tenant=request.tenant,
                                  aliases=aliases, envelope=request.envelope.to_json().decode())
            if not request.aliases:
                # A fresh id nobody else knows yet: nothing to race for, but remember it
                # (accepted record) so a later repeat of this id is recognised.
                to_append[index] = record
                continue
            entry = self._view.lookup(request.tenant, request.aliases)
            if entry is not None and entry.accepted:
                results[index] = AcceptResult(Envelope.from_json(entry.envelope), replayed=True)
                continue
            if entry is not None:
                if now_ms() - entry.since_ms < self._stale_after_ms:
                    continue  # someone is appending it right now: wait for them below
                # The claimant vanished before appending: take over with ITS envelope.
                record = record.model_copy(update={"envelope": entry.envelope,
                                                   "supersedes": entry.claim_id})
            verdict = self._view.expect(record.claim_id)
            written = self._producer.produce(self._topics.idempotency, record.to_json(),
                                             key=record.key(),
                                             partition=self._view.partition_for(request.tenant))
            claims[index] = (record, written, verdict)

        for index, (record, written, verdict) in claims.items():
            try:
                await asyncio.wrap_future(written)
                outcome = await asyncio.wait_for(asyncio.wrap_future(verdict),
                                                 self._verdict_timeout)
            except Exception as exc:  # claim not written or not seen back: nothing appended
                self._view.forget(record.claim_id)
                log.warning("idempotency claim failed: %s", exc)
                results[index] = AcceptResult(error=unavailable(
                    "Kafka did not acknowledge the idempotency claim in time; nothing was "
                    "appended, retry with the same id or Idempotency-Key"))
                continue
            if outcome.won:
                to_append[index] = record
            elif outcome.entry is not None and outcome.entry.accepted:
                results[index] = AcceptResult(Envelope.from_json(outcome.entry.envelope),
                                              replayed=True)
            # else: lost to a claim still being appended (maybe an earlier item of this
            # very call); wait for it below.

        await self._append(to_append, results)
        waiting = [index for index, result in enumerate(results) if result is None]
        settled = await asyncio.gather(*(self._await_acceptance(requests[index])
                                         for index in waiting))
        for index, result in zip(waiting, settled, strict=True):
            results[index] = result
        return self._count([r for r in results if r is not None], source)

    async def _await_acceptance(self, request: EventRequest) -> AcceptResult:
        """Replay the original once its claimant appended it; 409 if that takes too long."""
        deadline = asyncio.get_running_loop().time() + self._verdict_timeout
        while True:
            entry = self._view.lookup(request.tenant, request.aliases)
            if entry is not None and entry.accepted:
                return AcceptResult(Envelope.from_json(entry.envelope), replayed=True)
            if asyncio.get_running_loop().time() >= deadline:
                return AcceptResult(error=self._in_progress(request))
            await asyncio.sleep(ACCEPTANCE_POLL)

    async def _append(self, to_append: dict[int, LedgerRecord],
                      results: list[AcceptResult | None]) -> None:
        """Append winners in request order; once each is acknowledged, mark it accepted.

        Strictly in that order: an ``accepted`` record for an event that never reached
        the events topic would make every later repeat replay an event nobody stored.
        """
        appends = []
        for index in sorted(to_append):
            record = to_append[index]
            appended = self._producer.produce(self._topics.events, record.envelope.encode(),
                                              key=record.tenant.encode())
            appends.append((index, record, appended))
        marks = []
        for index, record, appended in appends:
            try:
                ack = await asyncio.wrap_future(appended)
            except Exception as exc:
                log.warning("events append failed: %s", exc)
                results[index] = AcceptResult(error=unavailable(
                    f"Kafka did not acknowledge the event within {self._producer.timeout:g}s; "
                    "retry with the same id or Idempotency-Key"))
                continue
            self._metrics.produce_latency.observe(ack.latency)
            marked = self._producer.produce(self._topics.idempotency, record.accepted().to_json(),
                                            key=record.key(),
                                            partition=self._view.partition_for(record.tenant))
            marks.append((index, record, marked))
        for index, record, marked in marks:
            try:
                await asyncio.wrap_future(marked)
            except Exception as exc:
                # The event is durable, so it is accepted; only its dedupe record is missing
                # (a repeat after the stale period re-appends the same envelope, same id).
                log.warning("accepted record for claim %s not written: %s", record.claim_id, exc)
            results[index] = AcceptResult(Envelope.from_json(record.envelope))

    def _in_progress(self, request: EventRequest) -> IntakeError:
        aliases = ", ".join(request.aliases)
        return IntakeError(409, "in_progress",
                           f"{aliases}: another request with this id or Idempotency-Key is "
                           "still being processed; retry in a few seconds")

    def _count(self, results: list[AcceptResult], source: str) -> list[AcceptResult]:
        for result in results:
            if result.error is not None:
                self._metrics.rejected.labels(source, result.error.reason).inc()
            elif result.replayed:
                self._metrics.duplicates.labels(source).inc()
            else:
                self._metrics.accepted.labels(source).inc()
        return results
