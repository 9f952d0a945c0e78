"""Receivers that fail for a while: one down (connection refused) then back, one answering
slower than the delivery timeout then fast again. Each test ends with the ledger check;
their duplicates are the attempts the receiver got but answered too late."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator

import pytest

from tests.faults.stack import FaultStack, add_endpoint, probe_until_live
from tests.support.ledger import Ledger
from tests.support.receiver import Receiver

EVENTS = 60


class StoppableReceiver(Receiver):
    """A :class:`Receiver` whose :meth:`stop` also cuts its open keep-alive connections, so
    that a stopped receiver is really down (connection refused or reset), not still
    serving the connections the fanout already holds."""

    def start(self) -> StoppableReceiver:
        super().start()
        connections: set[socket.socket] = set()
        self._open = connections
        handler = self._server.RequestHandlerClass

        class Tracked(handler):  # type: ignore[valid-type, misc]
            def setup(self) -> None:
                super().setup()
                connections.add(self.connection)

            def finish(self) -> None:
                connections.discard(self.connection)
                super().finish()

        self._server.RequestHandlerClass = Tracked
        return self

    def stop(self) -> None:
        super().stop()
        for connection in list(self._open):
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def own_receiver() -> Iterator[Receiver]:
    """A receiver of this test alone, so that it can be stopped and started again."""
    server = StoppableReceiver().start()
    yield server
    server.stop()


def publish_paced(stack: FaultStack, ledger: Ledger, count: int, seconds: float) -> None:
    """``count`` events of the ledger's type over ``seconds``, straight to the events topic."""
    for n in range(count):
        envelope = stack.platform.event(f"{ledger.event_prefix}.created", n=n)
        ledger.accepted(envelope)
        time.sleep(seconds / count)


def test_a_receiver_down_for_a_while_then_back(
        stack: FaultStack, own_receiver: Receiver, request: pytest.FixtureRequest) -> None:
    stack.ensure("eventlog", "fanout", "fanout-2", "ingest")
    stack.wait_fanout_settled()
    ledger = Ledger(stack.settings, own_receiver, test=request.node.name,
                    event_prefix="receiverdown")
    add_endpoint(stack, ledger, own_receiver, "/receiverdown")
    probe_until_live(stack, ledger, own_receiver)

    publish_paced(stack, ledger, EVENTS // 3, 0.5)
    own_receiver.stop()  # connection refused from now on
    publish_paced(stack, ledger, EVENTS // 3, 1.5)
    own_receiver.start()  # the same port again
    publish_paced(stack, ledger, EVENTS // 3, 0.5)

    report = ledger.check(stack.url("eventlog"), fault=(
        f"the receiver refused connections for ~1.5 s while {EVENTS // 3} of {EVENTS} "
        "events were published (retry tiers 1 s, 2 s)"))
    assert report.failed_attempts > 0, "no attempt failed: the receiver was never down"
    assert report.delivered_pairs > EVENTS // 3  # some came back through the retry tiers


def test_a_receiver_slower_than_the_delivery_timeout_for_a_while(
        stack: FaultStack, receiver: Receiver, request: pytest.FixtureRequest) -> None:
    stack.ensure("eventlog", "fanout", "fanout-2", "ingest")
    stack.wait_fanout_settled()
    ledger = Ledger(stack.settings, receiver, test=request.node.name,
                    event_prefix="receiverslow")
    slow_until = [0.0]
    timeout = stack.settings.delivery_timeout

    def slow_then_fast(_: int) -> tuple[int, dict[str, str], float]:
        # Answers arrive 1 s after the fanout gave up, until slow_until.
        return 200, {}, timeout + 1.0 if time.monotonic() < slow_until[0] else 0.0

    add_endpoint(stack, ledger, receiver, "/receiverslow", behaviour=slow_then_fast)
    probe_until_live(stack, ledger, receiver)

    slow_until[0] = time.monotonic() + 2.5
    publish_paced(stack, ledger, EVENTS, 3.0)

    report = ledger.check(stack.url("eventlog"), fault=(
        f"the receiver answered {timeout + 1:g} s late (delivery timeout {timeout:g} s) for "
        f"2.5 s of the 3 s in which {EVENTS} events were published"))
    assert report.duplicates > 0, "no attempt timed out: the fault did not happen"
