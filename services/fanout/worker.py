"""The fanout worker's decisions, independent of Faust: match, attempt, route the outcome.

Every method that "finishes" a message returns only after everything that message
leads to (delivery tasks, attempt record, next tier or DLQ record, endpoint updates)
was acknowledged by Kafka; the agents acknowledge the consumed offset after that.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from datetime import datetime, timedelta
from typing import Any, Protocol

from services.fanout.deliverer import Deliverer, DeliveryResult
from services.fanout.dispatch import EndpointDispatcher, until_durable
from services.fanout.endpoint_health import FailureTracker, StreakView, Verdict
from services.fanout.endpoint_view import EndpointView
from services.fanout.metrics import FanoutMetrics
from services.fanout.retry_plan import plan_after_failure
from services.fanout.verification import ChallengeSender
from webhooks import tracing
from webhooks.delivery import AttemptRecord, DeliveryTask, Outcome
from webhooks.endpoints import Endpoint
from webhooks.envelope import Envelope, utcnow
from webhooks.settings import Settings
from webhooks.topics import Topics

log = logging.getLogger(__name__)

Headers = list[tuple[str, bytes]]


class Publish(Protocol):
    """Writes one record; the awaitable completes once Kafka acknowledged it."""

    def __call__(self, topic: str, key: bytes, value: bytes | None,
                 headers: Headers | None = None) -> Awaitable[None]: ...

DIRECT_HEADER = "fanout-direct"
"""Marked a task record whose first attempt the matching worker made itself; versions
before 2026-12-04 wrote one per fresh task. The deliveries agent still acknowledges such
a record unread, so a worker upgraded mid-stream does not attempt those tasks twice."""

ENDPOINT_DISABLED_EVENT = "endpoint.disabled"

VIEW_CATCH_UP_TIMEOUT = 10.0
"""How long a disable waits for the endpoints view to read the topic's latest records."""

PARKED_HORIZONS_KEPT = 1000
"""Past this many rate-limited endpoints with parked tasks, the horizons already passed
are forgotten (the next park of such an endpoint starts from its queue again)."""


class FanoutWorker:
    """Matching and delivery for one worker process."""

    def __init__(self, settings: Settings, view: EndpointView, deliverer: Deliverer,
                 publish: Publish, dispatcher: EndpointDispatcher,
                 metrics: FanoutMetrics, streaks: StreakView | None = None,
                 tenant_erased: Callable[[str], bool] = lambda tenant: False) -> None:
        """``tenant_erased`` tells whether a tenant was erased (the registry): nothing more
        is delivered for it."""
        self.tenant_erased = tenant_erased
        self._runners: set[asyncio.Task[None]] = set()
        self.settings = settings
        self.topics = Topics.from_settings(settings)
        self.schedule = settings.retry_schedule
        self.view = view
        self.deliverer = deliverer
        self.publish = publish
        self.dispatcher = dispatcher
        self.metrics = metrics
        self.health = FailureTracker(settings.disable_after, settings.disable_after_failures,
                                     saved=streaks)
        self.challenges = ChallengeSender(view, deliverer, self._write_endpoint, self._record)
        self._parked_until: dict[str, float] = {}
        """Per rate-limited endpoint, when (monotonic seconds) its last parked task is due."""

    # -- matching --------------------------------------------------------------------

    def fan_out(self, envelope: Envelope, on_durable: Callable[[], None],
                cancelled: Callable[[], bool] = lambda: False,
                trace: tracing.Trace | None = None) -> list[DeliveryTask]:
        """One task per matching endpoint, attempted here at once unless it goes through a
        topic keyed by endpoint id (an ordered or rate-limited endpoint's); returns the tasks.

        ``on_durable`` runs once every task's first outcome (attempt record, next tier
        or DLQ) is in Kafka: until then the event stays unacknowledged, so after a crash
        it is matched and delivered again (same ``webhook-id``). A fresh task is written
        to Kafka only when its first attempt fails or is parked, as the record of the
        tier it goes to: a task record written first would only be read back to be
        skipped, a write and a read per webhook that recover nothing the event's
        uncommitted offset does not.

        A rate-limited endpoint's tasks all go through the deliveries topic instead, like
        its retries keyed by endpoint id: the worker holding that partition number of
        every topic it consumes (Faust assigns co-partitioned topics together) makes all
        of the endpoint's attempts, so one limiter holds its rate across workers.

        With traces on, the matching is a ``fanout.match`` span continuing ``trace`` (the
        event record's), and each task's attempts are its children.
        """
        tracer = tracing.tracer
        span = tracer.start_span("fanout.match", context=trace.context if trace else None,
                                 kind=tracing.SpanKind.CONSUMER) if tracer is not None else None
        erased = self.tenant_erased(envelope.tenant)  # in flight when its tenant was erased
        matched = [] if erased else self.view.matching(envelope)
        tasks = [DeliveryTask.create(envelope, endpoint.id) for endpoint in matched]
        if span is not None:
            if span.is_recording():
                span.set_attributes({**tracing.event_attributes(envelope),
                                     "webhooks.endpoints_matched": len(tasks)})
            span.end()
            trace = tracing.Trace.of(span)
        if not tasks:
            on_durable()
            return tasks
        remaining = len(tasks)

        def one_durable() -> None:
            nonlocal remaining
            remaining -= 1
            if remaining == 0:
                on_durable()

        for endpoint, task in zip(matched, tasks, strict=True):
            if endpoint.ordered:
                self._start(self._queue(self.topics.ordered, task, one_durable, trace))
            elif endpoint.rate_limit:
                self._start(self._queue(self.topics.deliveries, task, one_durable, trace))
            else:
                self.accept(task, on_durable=one_durable, cancelled=cancelled, trace=trace)
        self.metrics.tasks_created.inc(len(tasks))
        return tasks

    async def _queue(self, topic: str, task: DeliveryTask, on_durable: Callable[[], None],
                     trace: tracing.Trace | None) -> None:
        """Write ``task`` to ``topic`` (keyed by endpoint id), where the worker holding its
        partition attempts it: the ordered topic, whose lane delivers an endpoint's tasks
        one at a time in the order written (services.fanout.ordered), or the deliveries
        topic. ``on_durable`` runs once Kafka acknowledged the write."""
        await until_durable(lambda: self.publish(topic, task.key, task.to_json(),
                                                 trace.kafka if trace else None),
                            f"writing a task to {topic}")
        on_durable()

    def _start(self, coro: Coroutine[Any, Any, None]) -> None:
        runner = asyncio.get_running_loop().create_task(coro)
        self._runners.add(runner)
        runner.add_done_callback(self._runners.discard)

    # -- delivery --------------------------------------------------------------------

    def accept(self, task: DeliveryTask, on_durable: Callable[[], None],
               cancelled: Callable[[], bool] = lambda: False,
               trace: tracing.Trace | None = None) -> None:
        """Schedule ``task`` for when it is due; ``on_durable`` runs once its outcome is in Kafka.

        Never blocks: a task that is not due yet waits on a timer, not in the consumer.
        A task whose message was revoked by then (``cancelled()``) is skipped unacknowledged.
        ``trace``: the context its attempt continues (traces on).
        """
        delay = 0.0
        if task.not_before:
            delay = (task.not_before - utcnow()).total_seconds()
        endpoint = self.view.get(task.endpoint_id)

        async def job() -> Callable[[], Awaitable[None]] | None:
            if cancelled():
                return None
            finish = await self.send(task, trace=trace)

            async def durable() -> None:
                await finish()
                on_durable()

            return durable

        async def defer() -> None:
            if cancelled():
                return
            await self._defer(task, trace, endpoint.rate_limit if endpoint else None)
            on_durable()

        self.dispatcher.submit_at(delay, task.endpoint_id, job,
                                  endpoint.rate_limit if endpoint else None,
                                  overflow=defer if self.schedule.tier_names else None)

    async def _defer(self, task: DeliveryTask, trace: tracing.Trace | None,
                     rate_limit: int | None = None) -> None:
        """Park a due task whose endpoint already has a full queue (a slow or dead one) in
        a retry tier topic, without an attempt: the first tier for a fresh task, its own
        tier for a retry. It comes back when that tier's delay has passed, or for an
        endpoint's ``rate_limit``, when its queue can have drained."""
        # Attempts beyond a schedule shortened since the task was queued: its last tier.
        tier = self.schedule.tier_before(task.attempt) or self.schedule.tiers[-1]
        delay = tier.delay
        if rate_limit:
            delay = self._parking_delay(task.endpoint_id, rate_limit)
        due = utcnow() + timedelta(seconds=self.schedule.jittered(delay))
        parked = task.model_copy(update={"not_before": due})
        await self.publish(self.topics.retry(tier.name), parked.key,
                           parked.to_json(), trace.kafka if trace else None)
        self.metrics.deferred.inc()

    def _parking_delay(self, endpoint_id: str, rate_limit: int) -> float:
        """Seconds until a parked task of a rate-limited endpoint can start.

        The limit, not a slow receiver, holds the queue up: it drains at ``rate_limit`` a
        second, so the task returns once the queue had time to drain (a tier's delay would
        be far too long for a fast limit). Tasks parked after it return one ``1/rate``
        later each: parked all for the same delay, they came back at once, and all but the
        first few found the queue full again and were parked again. (While fresh tasks
        keep arriving faster than the limit, they still take some of the room a returning
        task was due, so a task can be parked more than once.)
        """
        now = time.monotonic()
        drained = now + self.dispatcher.queued_for(endpoint_id) / rate_limit
        start = max(drained, self._parked_until.get(endpoint_id, 0.0))
        if len(self._parked_until) >= PARKED_HORIZONS_KEPT:
            self._parked_until = {endpoint: due for endpoint, due in self._parked_until.items()
                                  if due > now}
        self._parked_until[endpoint_id] = start + 1 / rate_limit
        return start - now

    async def send(self, task: DeliveryTask,
                   retry_in_place: Callable[[DeliveryTask], None] | None = None,
                   trace: tracing.Trace | None = None
                   ) -> Callable[[], Awaitable[Outcome]]:
        """The HTTP attempt; returns the step that makes its outcome durable.

        Decisions that later attempts must see at once (a disabled endpoint) are applied
        to the local view here; the finish step publishes them. A task of a paused
        endpoint is held (parked again in its tier) without an attempt. With
        ``retry_in_place`` (an ordered endpoint's lane) a failed task that has retries
        left is handed to it instead of to a retry tier topic. With traces on, the attempt
        is a ``fanout.attempt`` span continuing ``trace``, named by the request's
        ``traceparent``; a retry tier's record carries ``trace`` on.
        """
        endpoint = self.view.get(task.endpoint_id)
        started = utcnow()
        if self.tenant_erased(task.tenant):
            return self._forget
        if task.trigger == "verify":  # a URL verification challenge, sent even while paused
            return await self.challenges.send(task)
        if endpoint is None or endpoint.disabled or not endpoint.verified:
            return lambda: self._drop(task, endpoint, started)
        if endpoint.paused and retry_in_place is None:
            return lambda: self._hold(task, trace)
        tracer = tracing.tracer
        if tracer is None or trace is None or not trace.sampled:
            # Not recorded: the request still names the (unsampled) trace it belongs to.
            result = await self.deliverer.deliver(task, endpoint, trace.http if trace else None)
        else:
            result = await self._traced_attempt(tracer, task, endpoint, trace)
        self.metrics.latency.observe(result.latency_ms / 1000)
        if result.succeeded:
            verdict = self.health.record(endpoint.id, True, time.time())

            async def delivered() -> Outcome:
                # Awaited in turn, not gathered (a task each): a streak is rarely saved.
                await self._record(task, endpoint, result, started, "delivered")
                await self._save_streak(endpoint.id, verdict)
                return "delivered"

            return delivered

        disable_reason = None
        verdict = Verdict()
        if result.gone:
            disable_reason = "endpoint answered 410 Gone"
        else:
            verdict = self.health.record(endpoint.id, False, time.time())
            if verdict.disable:
                disable_reason = "every delivery attempt failed for too long"
        disabled = self._mark_disabled(endpoint, disable_reason) if disable_reason else None

        step = plan_after_failure(
            task, result, started, self.schedule, self.topics, utcnow(),
            stop_reason=f"endpoint disabled: {disable_reason}" if disable_reason else None)
        outcome: Outcome = ("endpoint_disabled" if disable_reason
                            else "dead_lettered" if step.dead_letter else "retrying")

        async def failed() -> Outcome:
            if disabled is not None and disable_reason is not None:
                await self._announce_disabled(disabled, disable_reason)
            writes = [self._record(task, endpoint, result, started, outcome, step.due),
                      self._save_streak(endpoint.id, verdict)]
            if step.dead_letter or retry_in_place is None:
                writes.append(self.publish(step.topic, step.task.key, step.task.to_json(),
                                           trace.kafka if trace else None))
            await asyncio.gather(*writes)
            if retry_in_place is not None and not step.dead_letter:
                retry_in_place(step.task)
            elif step.dead_letter:
                self.metrics.dead_lettered.inc()
                log.info("dead-lettered: %s", step.task.dlq_reason, extra={
                    "tenant": task.tenant, "event_id": task.event.id,
                    "endpoint_id": task.endpoint_id, "task_id": task.task_id,
                    "attempt": task.attempt})
            else:
                self.metrics.retries.labels(step.topic.rsplit(".", 1)[-1]).inc()
            return outcome

        return failed

    async def _traced_attempt(self, tracer: tracing.Tracer, task: DeliveryTask,
                              endpoint: Endpoint, trace: tracing.Trace) -> DeliveryResult:
        """The delivery inside its ``fanout.attempt`` span, which the request names."""
        span = tracer.start_span("fanout.attempt", context=trace.context,
                                 kind=tracing.SpanKind.CLIENT,
                                 attributes={**tracing.event_attributes(task.event),
                                             "webhooks.endpoint_id": task.endpoint_id,
                                             "webhooks.attempt": task.attempt})
        result = await self.deliverer.deliver(task, endpoint, tracing.http_headers(span))
        if result.response_status is not None:
            span.set_attribute("http.response.status_code", result.response_status)
        if result.error is not None:
            span.set_attribute("error.type", result.error)
            span.set_status(tracing.Status(tracing.StatusCode.ERROR, result.error))
        span.end()
        return result

    async def disable(self, endpoint: Endpoint, reason: str) -> None:
        """Write the endpoint back disabled and announce ``endpoint.disabled`` to its tenant."""
        disabled = self._mark_disabled(endpoint, reason)
        if disabled is not None:
            await self._announce_disabled(disabled, reason)

    def _mark_disabled(self, endpoint: Endpoint, reason: str) -> Endpoint | None:
        """Disable in the local view at once; None if deleted or already disabled."""
        current = self.view.get(endpoint.id)
        if current is None or current.disabled:
            return None  # deleted meanwhile, or another attempt already disabled it
        disabled = current.model_copy(update={"disabled": True, "disabled_reason": reason,
                                              "updated": utcnow()})
        self.view.put(disabled)
        self.health.forget(endpoint.id)
        return disabled

    async def _confirm_disabled(self, disabled: Endpoint) -> Endpoint | None:
        """The record to write back, based on the latest one in the topic; None when the
        endpoint was deleted, re-pointed or disabled meanwhile, or the view is stuck.

        The worker decided on the record its view held, which may lag behind the API's
        writes; writing that copy back could bring back a deleted endpoint or undo a
        secret rotation, so the view first catches up with the topic.
        """
        if not await asyncio.to_thread(self.view.catch_up, VIEW_CATCH_UP_TIMEOUT):
            log.warning("endpoint %s not disabled: the endpoints view did not catch up",
                        disabled.id)
            return None
        current = self.view.get(disabled.id)
        if current is disabled:
            return disabled  # nothing was written to the topic since the decision
        if current is None or current.disabled or current.url != disabled.url:
            return None
        rebased = current.model_copy(update={"disabled": True,
                                             "disabled_reason": disabled.disabled_reason,
                                             "updated": disabled.updated})
        self.view.put(rebased)
        return rebased

    async def _announce_disabled(self, decided: Endpoint, reason: str) -> None:
        disabled = await self._confirm_disabled(decided)
        if disabled is None:
            return
        notice = Envelope.create(
            type=ENDPOINT_DISABLED_EVENT, tenant=disabled.tenant,
            api_version=self.settings.api_version,
            data={"object": {"id": disabled.id, "url": disabled.url, "reason": reason}})
        await asyncio.gather(
            self.publish(self.topics.endpoints, disabled.id.encode(), disabled.to_json()),
            self.publish(self.topics.events, disabled.tenant.encode(), notice.to_json()),
            # A re-enabled endpoint starts with a clean streak (disables are rare, so the
            # tombstone is written whether or not a streak was saved).
            self.publish(self.topics.endpoint_health, disabled.id.encode(), None),
        )
        self.metrics.endpoints_disabled.labels("gone" if "410" in reason else "failing").inc()
        log.warning("disabled endpoint %s: %s", disabled.id, reason,
                    extra={"tenant": disabled.tenant, "endpoint_id": disabled.id})

    async def _save_streak(self, endpoint_id: str, verdict: Verdict) -> None:
        """Write the endpoint's failure streak (or its tombstone) when it changed."""
        if verdict.save:
            value = verdict.saved.to_json() if verdict.saved is not None else None
            await self.publish(self.topics.endpoint_health, endpoint_id.encode(), value)

    async def _write_endpoint(self, endpoint: Endpoint) -> None:
        await self.publish(self.topics.endpoints, endpoint.id.encode(), endpoint.to_json())

    async def _drop(self, task: DeliveryTask, endpoint: Endpoint | None,
                    started: datetime) -> Outcome:
        """No delivery for a deleted, disabled or unverified endpoint (events published
        while its verification is pending or failed are not delivered later); the attempt
        record says why."""
        error = ("endpoint_missing" if endpoint is None else "endpoint_disabled"
                 if endpoint.disabled else "endpoint_unverified")
        result = DeliveryResult(False, 0.0, error=error)
        await self._record(task, endpoint, result, started, "dropped")
        return "dropped"

    async def _hold(self, task: DeliveryTask, trace: tracing.Trace | None) -> Outcome:
        """A task of a paused endpoint: parked in its tier topic without an attempt and
        looked at again when it comes due, so nothing is sent and nothing dropped."""
        await self._defer(task, trace)
        self.metrics.deliveries.labels("held").inc()
        return "held"

    async def _forget(self) -> Outcome:
        """A task of an erased tenant: not delivered, not retried, and no attempt record
        (it would carry the tenant's data again); only the metric counts it."""
        self.metrics.deliveries.labels("tenant_deleted").inc()
        return "tenant_deleted"

    async def _record(self, task: DeliveryTask, endpoint: Endpoint | None,
                      result: DeliveryResult, started: datetime, outcome: Outcome,
                      next_attempt: datetime | None = None) -> None:
        record = AttemptRecord(
            task_id=task.task_id, event_id=task.event.id, event_type=task.event.type,
            endpoint_id=task.endpoint_id, tenant=task.tenant, attempt=task.attempt,
            trigger=task.trigger, url=endpoint.url if endpoint else "",
            status="succeeded" if result.succeeded else "failed",
            response_status=result.response_status, response_body=result.response_body,
            error=result.error, latency_ms=result.latency_ms,
            timestamp=started, next_attempt_at=next_attempt,
            outcome=outcome, request_headers=result.request_headers,
            response_headers=result.response_headers,
            response_headers_truncated=result.response_headers_truncated)
        await self.publish(self.topics.attempts, task.key, record.to_json())
        self.metrics.deliveries.labels(outcome).inc()
        if result.error is not None:
            self.metrics.delivery_errors.labels(result.error).inc()
