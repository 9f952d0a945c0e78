"""Accepting validated events: idempotency claims, then the append to the events topic.

Shared by the HTTP handlers and the Kafka intake. :meth:`IngestPipeline.accept_many`
takes a list of :class:`EventRequest` and answers one :class:`AcceptResult` per item,
in order; it never raises for a single item's failure. An item is ``accepted`` only
after the broker acknowledged its envelope on the events topic (keyed by tenant, so
one tenant's events keep their order); it is ``replayed`` when it repeats an accepted
alias; otherwise it carries an :class:`IntakeError` (409 in progress, 503 unavailable).
See :mod:`services.ingest.idempotency_ledger` for the claim protocol.

Every Kafka write of a call is produced before any is awaited, one step at a time
(claims, then appends, then acceptance records), and each step's acknowledgements are
collected together with one wake-up of the event loop: a request batch or an intake
poll costs at most three broker round trips, not three per event, and two when no
alias needs a claim (see :attr:`EventRequest.claimed`); over HTTP one, since the answer
does not wait for the ledger record of fresh ids (:class:`FreshAcceptances`). Answers
carry the envelope JSON exactly as appended, so nothing is serialised twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from services.ingest.idempotency_ledger import (
    AcceptedBatch,
    AcceptedEvent,
    ClaimOutcome,
    LedgerRecord,
    new_claim_id,
)
from services.ingest.idempotency_view import IdempotencyView, now_ms
from services.ingest.metrics import IngestMetrics
from webhooks import tracing
from webhooks.acked_producer import AckedProducer, Acknowledged, Write
from webhooks.event_create import EventRequest, IntakeError
from webhooks.topics import Topics

log = logging.getLogger(__name__)

ACCEPTANCE_POLL = 0.02  # seconds between looks at the ledger while a claimant appends
FRESH_RECORD_DELAY = 0.05
"""How long HTTP acceptances of fresh ids gather before their ledger record is written."""


@dataclass(frozen=True)
class AcceptResult:
    """The outcome for one event: appended, replayed, or refused with a problem.

    ``envelope`` is the envelope's JSON exactly as appended to the events topic.
    """

    envelope: bytes | None = None
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


def tenant_disabled(tenant: str) -> IntakeError:
    """The 403 refusal of an event of a disabled (or erased) tenant."""
    return IntakeError(403, "tenant_disabled",
                       f"tenant {tenant} is disabled: its events are refused until an admin "
                       "enables it again (PATCH /v1/tenants/{id} with disabled: false)")


async def settled(futures: Sequence[Future[Any]], timeout: float | None = None) -> None:
    """Wait until every future is done (or ``timeout`` passed), with one wake-up of the
    loop for all of them instead of one per future; the caller reads each outcome."""
    if not futures:
        return
    loop = asyncio.get_running_loop()
    all_done = loop.create_future()
    pending = len(futures)
    lock = threading.Lock()  # done-callbacks run in the producer's and the view's threads

    def finish() -> None:
        if not all_done.done():
            all_done.set_result(None)

    def one_done(_: Future[Any]) -> None:
        nonlocal pending
        with lock:
            pending -= 1
            last = pending == 0
        if last:
            loop.call_soon_threadsafe(finish)

    for future in futures:
        future.add_done_callback(one_done)
    with contextlib.suppress(TimeoutError):  # the caller finds the futures still pending
        await asyncio.wait_for(asyncio.shield(all_done), timeout)


def _failure(future: Future[Any]) -> BaseException | None:
    """Why ``future`` failed; a future still pending counts as timed out."""
    if not future.done():
        return TimeoutError("no answer in time")
    return future.exception()


class IngestPipeline:
    """Claims, appends and acknowledgements for one ingest replica."""

    def __init__(self, topics: Topics, producer: AckedProducer, view: IdempotencyView,
                 metrics: IngestMetrics, claim_stale_after: float,
                 tenant_disabled: Callable[[str], bool] = lambda tenant: False) -> None:
        """``tenant_disabled`` tells whether a tenant's events are refused (the registry)."""
        self._tenant_disabled = tenant_disabled
        self._topics = topics
        self._producer = producer
        self._view = view
        self._metrics = metrics
        self._stale_after_ms = int(claim_stale_after * 1000)
        # How long a claimant waits for its own follower to apply the claim.
        self._verdict_timeout = producer.timeout + 5.0
        self.fresh = FreshAcceptances(topics, producer, view)

    async def accept_many(self, requests: list[EventRequest], source: str,
                          record_fresh_later: bool = False) -> list[AcceptResult]:
        """Accept each event at most once per alias; one result per request, in order.

        With ``record_fresh_later`` (HTTP) the answer does not wait for the ledger record
        of fresh ids (:class:`FreshAcceptances`); the Kafka intake, which commits once
        everything of a poll is written, waits for it.
        """
        if not self._view.ready:
            problem = unavailable("ingest is starting: the idempotency ledger is still loading "
                                  "from Kafka (or Kafka is unreachable); retry shortly")
            return self._count([AcceptResult(error=problem)] * len(requests), source)
        results: list[AcceptResult | None] = [None] * len(requests)
        to_append: dict[int, LedgerRecord] = {}
        claims: list[tuple[int, LedgerRecord, Future[Acknowledged], Future[ClaimOutcome]]] = []

        for index, request in enumerate(requests):
            if self._tenant_disabled(request.tenant):
                results[index] = AcceptResult(error=tenant_disabled(request.tenant))
                continue
            # The event's own id always becomes an alias, so a later repeat that names the
            # id (e.g. one ingest generated for an Idempotency-Key request) is recognised.
            id_alias = f"id:{request.envelope.id}"
            aliases = request.aliases if id_alias in request.aliases \
                else (*request.aliases, id_alias)
            entry = self._view.lookup(request.tenant, request.aliases) \
                if request.aliases else None
            unclaimed = entry is None and not request.claimed
            record = LedgerRecord(kind="accepted" if unclaimed else "claim",
                                  claim_id=new_claim_id(), tenant=request.tenant,
                                  aliases=aliases, envelope=request.envelope.to_json().decode())
            if unclaimed:
                # A fresh id (ours, or the intake's re-readable one) that no other request
                # carries now: nothing to race for, but remember it (in an accepted batch
                # record, once the append is acknowledged) so a later repeat is recognised.
                to_append[index] = record
                continue
            if entry is not None and entry.accepted:
                results[index] = AcceptResult(entry.envelope.encode(), replayed=True)
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
            claims.append((index, record, written, verdict))

        if claims:
            await self._settle_claims(claims, to_append, results)
        await self._append(to_append, results, record_fresh_later, requests)
        waiting = [index for index, result in enumerate(results) if result is None]
        settled_results = await asyncio.gather(*(self._await_acceptance(requests[index])
                                                 for index in waiting))
        for index, result in zip(waiting, settled_results, strict=True):
            results[index] = result
        return self._count([r for r in results if r is not None], source)

    async def _settle_claims(
            self, claims: list[tuple[int, LedgerRecord, Future[Acknowledged],
                                     Future[ClaimOutcome]]],
            to_append: dict[int, LedgerRecord], results: list[AcceptResult | None]) -> None:
        """Wait for every claim's acknowledgement, then for the follower's verdicts on them
        (bounded); winners go to ``to_append``, repeats of accepted events are replayed."""
        await settled([written for _, _, written, _ in claims])
        await settled([verdict for _, _, written, verdict in claims
                       if _failure(written) is None], self._verdict_timeout)
        for index, record, written, verdict in claims:
            failure = _failure(written) or _failure(verdict)
            if failure is not None:  # claim not written or not seen back: nothing appended
                self._view.forget(record.claim_id)
                log.warning("idempotency claim failed: %s", failure)
                results[index] = AcceptResult(error=unavailable(
                    "Kafka did not acknowledge the idempotency claim in time; nothing was "
                    "appended, retry with the same id or Idempotency-Key"))
                continue
            outcome = verdict.result()
            if outcome.won:
                to_append[index] = record
            elif outcome.entry is not None and outcome.entry.accepted:
                results[index] = AcceptResult(outcome.entry.envelope.encode(), replayed=True)
            # else: lost to a claim still being appended (maybe an earlier item of this
            # very call); wait for it below.

    async def _await_acceptance(self, request: EventRequest) -> AcceptResult:
        """Replay the original once its claimant appended it; 409 if that takes too long."""
        deadline = asyncio.get_running_loop().time() + self._verdict_timeout
        while True:
            entry = self._view.lookup(request.tenant, request.aliases)
            if entry is not None and entry.accepted:
                return AcceptResult(entry.envelope.encode(), replayed=True)
            if asyncio.get_running_loop().time() >= deadline:
                return AcceptResult(error=self._in_progress(request))
            await asyncio.sleep(ACCEPTANCE_POLL)

    async def _append(self, to_append: dict[int, LedgerRecord],
                      results: list[AcceptResult | None], record_fresh_later: bool,
                      requests: list[EventRequest]) -> None:
        """Append winners in request order; once each is acknowledged, mark it accepted.

        Strictly in that order: an ``accepted`` record for an event that never reached
        the events topic would make every later repeat replay an event nobody stored.
        """
        if not to_append:
            return
        order = sorted(to_append)
        # With traces on, each append is a span whose context the event record carries.
        tracer = tracing.tracer
        spans = ({index: _append_span(tracer, requests[index]) for index in order}
                 if tracer is not None else None)
        loop = asyncio.get_running_loop()
        started = loop.time()
        appended = await self._producer.produce_each([
            Write(self._topics.events, to_append[index].envelope.encode(),
                  key=to_append[index].tenant.encode(),
                  headers=tracing.kafka_headers(spans[index] or requests[index].trace)
                  if spans is not None else None)
            for index in order])
        self._metrics.produce_latency.observe(loop.time() - started)
        durable = []
        for index, failure in zip(order, appended, strict=True):
            if spans is not None:
                _end_append_span(spans[index], failure)
            if failure is not None:
                log.warning("events append failed: %s", failure)
                results[index] = AcceptResult(error=unavailable(
                    f"Kafka did not acknowledge the event within {self._producer.timeout:g}s; "
                    "retry with the same id or Idempotency-Key"))
            else:
                durable.append(to_append[index])
        await self._mark_accepted(durable, record_fresh_later)
        for index in order:
            if results[index] is None:
                results[index] = AcceptResult(to_append[index].envelope.encode())

    async def _mark_accepted(self, durable: list[LedgerRecord], record_fresh_later: bool) -> None:
        """Write the ledger records that mark appended events as accepted: a claim's own
        ``accepted`` record, and one :class:`AcceptedBatch` per tenant for fresh ids
        (handed to :attr:`fresh` with ``record_fresh_later``)."""
        marks = [record.accepted() for record in durable if record.kind == "claim"]
        fresh: dict[str, list[AcceptedEvent]] = defaultdict(list)
        for record in durable:
            if record.kind == "accepted":
                fresh[record.tenant].append(AcceptedEvent(record.aliases, record.envelope))
        batches: list[AcceptedBatch] = []
        for tenant, events in fresh.items():
            if record_fresh_later:
                self.fresh.add(tenant, events)
            else:
                batches.extend(AcceptedBatch.of(tenant, events))
        if not marks and not batches:
            return
        marked = await self._producer.produce_each([
            Write(self._topics.idempotency, record.to_json(), key=record.key(),
                  partition=self._view.partition_for(record.tenant))
            for record in [*marks, *batches]])
        for failure in marked:
            if failure is not None:
                _accepted_record_lost(failure)

    def _in_progress(self, request: EventRequest) -> IntakeError:
        aliases = ", ".join(request.aliases)
        return IntakeError(409, "in_progress",
                           f"{aliases}: another request with this id or Idempotency-Key is "
                           "still being processed; retry in a few seconds")

    def _count(self, results: list[AcceptResult], source: str) -> list[AcceptResult]:
        # One increment per outcome and call, not per event: each takes a lock.
        outcomes = Counter("replayed" if r.replayed else "accepted" if r.error is None
                           else r.error.reason for r in results)
        for outcome, count in outcomes.items():
            if outcome == "accepted":
                self._metrics.accepted.labels(source).inc(count)
            elif outcome == "replayed":
                self._metrics.duplicates.labels(source).inc(count)
            else:
                self._metrics.rejected.labels(source, outcome).inc(count)
        return results


def _append_span(tracer: tracing.Tracer, request: EventRequest) -> tracing.Span | None:
    """The span of one event's append, continuing the request's trace (if any); None when
    that trace is not sampled (the record then carries the request's context on)."""
    if request.trace is not None and not tracing.sampled(request.trace):
        return None
    return tracer.start_span(
        "ingest.append", context=request.trace, kind=tracing.SpanKind.PRODUCER,
        attributes=tracing.event_attributes(request.envelope))


def _end_append_span(span: tracing.Span | None, failure: BaseException | None) -> None:
    if span is None:
        return
    if failure is not None:
        span.set_status(tracing.Status(tracing.StatusCode.ERROR, str(failure)))
    span.end()


def _accepted_record_lost(failure: BaseException | None) -> None:
    # The events are durable, so accepted; only their dedupe record is missing (a repeat
    # of a claimed alias after the stale period re-appends the same envelope, same id; a
    # repeat of a fresh id is appended again with that id, which the event log stores once).
    if failure is not None:
        log.warning("accepted record not written: %s", failure)


class FreshAcceptances:
    """The ledger records of fresh ids accepted over HTTP, written a moment after the answer.

    A fresh id (one this replica generated) cannot be repeated before its 202 told the
    client, so nothing races for it and the answer need not wait for its ledger record:
    acceptances gather for :data:`FRESH_RECORD_DELAY` and go out as one
    :class:`AcceptedBatch` per tenant. That spares each single ``POST /v1/events`` a
    second broker round trip and the ledger one record per event. The replica applies
    them to its own ledger at once. One killed within that moment loses the records: a
    client that later sends such an id back (learnt from the 202) to another replica gets
    it appended again, with the same id, which the event log stores once.
    """

    def __init__(self, topics: Topics, producer: AckedProducer, view: IdempotencyView,
                 delay: float = FRESH_RECORD_DELAY) -> None:
        self._topics = topics
        self._producer = producer
        self._view = view
        self._delay = delay
        self._pending: dict[str, list[AcceptedEvent]] = defaultdict(list)
        self._lock = threading.Lock()  # flush() also runs from the stopping thread
        self._timer: asyncio.TimerHandle | None = None

    def add(self, tenant: str, events: list[AcceptedEvent]) -> None:
        """Remember ``events`` (appended, acknowledged) for the next record; in the loop."""
        self._view.accept_locally(tenant, events)
        with self._lock:
            self._pending[tenant].extend(events)
            if self._timer is None:
                self._timer = asyncio.get_running_loop().call_later(self._delay, self.flush)

    def flush(self) -> None:
        """Write what has gathered (the records' acknowledgements are only logged if lost)."""
        with self._lock:
            pending, self._pending = self._pending, defaultdict(list)
            self._timer = None
        for tenant, events in pending.items():
            for batch in AcceptedBatch.of(tenant, events):
                written = self._producer.produce(
                    self._topics.idempotency, batch.to_json(), key=batch.key(),
                    partition=self._view.partition_for(tenant))
                written.add_done_callback(lambda future: _accepted_record_lost(future.exception()))
