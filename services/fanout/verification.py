"""Endpoint verification in the fanout: send the challenge, settle the state from the answer.

The eventlog writes a pending endpoint record with a challenge, then queues a ``verify``
task carrying it (:mod:`webhooks.endpoint_verification`) on the deliveries topic, keyed
by endpoint id, so exactly one worker of the group gets it. That worker sends it like
every webhook, through its :class:`~services.fanout.deliverer.Deliverer` (SSRF guard,
signature, custom headers, connection pool), once: a failure is final (``failed`` with
the reason) until the owner asks again (``POST /v1/endpoints/{id}/verify``).

Exactly once, nearly: the task is acknowledged only after the settled endpoint record and
the attempt record are in Kafka. A worker that dies before that leaves the task to the
next owner, which finds the endpoint still pending with that challenge and sends it again
(same ``webhook-id``); one that dies after it finds the challenge settled and sends
nothing. A task whose challenge was superseded by a newer one is not sent either.

The settled state is written the way auto-disable writes ``disabled``: the endpoints view
first catches up with the topic, and the verification is applied to the latest record,
so a change made through the API meanwhile stands; a record that was deleted, re-pointed
(a new challenge) or settled meanwhile is left alone.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

from services.fanout.deliverer import Deliverer, DeliveryResult
from services.fanout.endpoint_view import EndpointView
from webhooks.delivery import DeliveryTask, Outcome
from webhooks.endpoint_verification import challenge_of, echoes, settled
from webhooks.endpoints import Endpoint
from webhooks.envelope import utcnow

log = logging.getLogger(__name__)

VIEW_CATCH_UP_TIMEOUT = 10.0
"""How long a verification waits for the endpoints view to read the topic's latest records."""

NOT_ECHOED = "challenge_not_echoed"

WriteEndpoint = Callable[[Endpoint], Awaitable[None]]
RecordAttempt = Callable[[DeliveryTask, Endpoint | None, DeliveryResult, datetime, Outcome],
                         Awaitable[None]]


class ViewBehind(RuntimeError):
    """The endpoints view did not catch up: the outcome cannot be written safely yet."""


def judge(result: DeliveryResult, challenge: str) -> tuple[str | None, str | None]:
    """(error class, reason) of a challenge's attempt; (None, None) when it verifies."""
    if result.succeeded:
        if echoes(result.response_body, challenge):
            return None, None
        return NOT_ECHOED, (f"the receiver answered HTTP {result.response_status} without "
                            'echoing the challenge: answer {"challenge": "<data.challenge>"}')
    if result.error in ("http_status", "redirect"):
        return result.error, f"the receiver answered HTTP {result.response_status}"
    return result.error or "network", result.response_body or result.error


class ChallengeSender:
    """Sends verification challenges and writes what their answers decide."""

    def __init__(self, view: EndpointView, deliverer: Deliverer, write: WriteEndpoint,
                 record: RecordAttempt) -> None:
        """``write`` publishes an endpoint record (acknowledged by Kafka); ``record``
        publishes the attempt record of a task."""
        self.view = view
        self.deliverer = deliverer
        self.write = write
        self.record = record

    async def send(self, task: DeliveryTask) -> Callable[[], Awaitable[Outcome]]:
        """The challenge's one attempt; returns the step that makes its outcome durable."""
        started = utcnow()
        challenge = challenge_of(task.event)
        endpoint = await self._pending(task.endpoint_id, challenge)
        if endpoint is None or challenge is None:
            missing = self.view.get(task.endpoint_id) is None
            return lambda: self._not_sent(task, "endpoint_missing" if missing else None,
                                          started)
        if endpoint.disabled:
            return lambda: self._not_sent(task, "endpoint_disabled", started, endpoint)
        result = await self.deliverer.deliver(task, endpoint)
        error, reason = judge(result, challenge)
        if error == NOT_ECHOED:
            result = dataclasses.replace(result, succeeded=False, error=NOT_ECHOED)
        assert endpoint.verification is not None
        now = utcnow()
        decided = endpoint.model_copy(update={
            "verification": settled(endpoint.verification, now, error, reason), "updated": now})
        self.view.put(decided)  # this worker matches events for it from now on
        outcome: Outcome = "verification_failed" if error else "verified"

        async def finish() -> Outcome:
            # The endpoint record first: when a write fails the whole step runs again,
            # and a retry finds the challenge settled (no second endpoint write) before
            # it writes the attempt record, which is then written once.
            await self._write_settled(decided, challenge)
            await self.record(task, endpoint, result, started, outcome)
            log.info("endpoint %s verification %s%s", endpoint.id, outcome,
                     f": {error}" if error else "",
                     extra={"tenant": endpoint.tenant, "endpoint_id": endpoint.id})
            return outcome

        return finish

    async def _pending(self, endpoint_id: str, challenge: str | None) -> Endpoint | None:
        """The endpoint if its verification waits for ``challenge``, else None."""

        def state(endpoint: Endpoint | None) -> str | None:
            """The state of ``challenge`` on ``endpoint`` (None: it holds another one)."""
            verification = endpoint.verification if endpoint is not None else None
            return verification.state if verification and verification.challenge == challenge \
                else None

        endpoint = self.view.get(endpoint_id)
        if state(endpoint) is None:
            # The eventlog wrote the pending record just before the task: the view may
            # not have read it yet.
            await self._catch_up()
            endpoint = self.view.get(endpoint_id)
        return endpoint if state(endpoint) == "pending" else None

    async def _write_settled(self, decided: Endpoint, challenge: str) -> None:
        """Write ``decided``'s verification onto the latest record, unless that record was
        deleted, given a new challenge or settled meanwhile."""
        await self._catch_up()
        current = self.view.get(decided.id)
        if current is None:
            return
        if current is not decided:  # written to since the decision (by the API, mostly)
            pending = current.verification
            if pending is None or pending.challenge != challenge or pending.state != "pending":
                return
            current = current.model_copy(update={"verification": decided.verification,
                                                 "updated": decided.updated})
            self.view.put(current)
        await self.write(current)

    async def _catch_up(self) -> None:
        if not await asyncio.to_thread(self.view.catch_up, VIEW_CATCH_UP_TIMEOUT):
            raise ViewBehind("the endpoints view did not catch up with the topic")

    async def _not_sent(self, task: DeliveryTask, error: str | None, started: datetime,
                        endpoint: Endpoint | None = None) -> Outcome:
        """Nothing sent: an attempt record says why (a deleted or disabled endpoint); none
        for a challenge that is stale (superseded, or settled before a restart)."""
        if error is not None:
            await self.record(task, endpoint, DeliveryResult(False, 0.0, error=error),
                              started, "dropped")
        return "dropped"
