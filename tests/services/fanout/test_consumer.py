"""The eager hand-over's resumption of a coroutine stopped after one step, and the
bounded commit before a rebalance.

The consumer itself runs in every worker test (each message goes through
``FanoutConsumer.wait_first``); the crash and rebalance tests cover its races."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaConsumer
from faust.types import TP

from services.fanout import consumer as consumer_module
from services.fanout.consumer import FanoutConsumer, resumed


async def first_step(coro: Any) -> Any:
    """Step ``coro`` once, as ``wait_first`` does; it must not finish in that step."""
    try:
        yielded = coro.send(None)
    except StopIteration:  # pragma: no cover - the tests give coroutines that wait
        pytest.fail("the coroutine finished in its first step")
    return asyncio.ensure_future(resumed(coro, yielded))


def test_a_coroutine_stopped_on_a_future_finishes_with_its_result() -> None:
    async def scenario() -> None:
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        steps: list[str] = []

        async def hand_over() -> int:
            steps.append("before")
            value = await future
            await asyncio.sleep(0)  # a bare yield as well
            steps.append("after")
            return value + 1

        task = await first_step(hand_over())
        assert steps == ["before"]
        await asyncio.sleep(0)
        assert not task.done()
        future.set_result(41)
        assert await task == 42
        assert steps == ["before", "after"]

    asyncio.run(scenario())


def test_an_exception_reaches_the_coroutine_and_comes_out() -> None:
    async def scenario() -> None:
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        seen: list[BaseException] = []

        async def hand_over() -> int:
            try:
                return await future
            except KeyError as exc:
                seen.append(exc)
                raise

        task = await first_step(hand_over())
        future.set_exception(KeyError("gone"))
        with pytest.raises(KeyError):
            await task
        assert len(seen) == 1

    asyncio.run(scenario())


def test_cancelling_the_resumption_cancels_the_coroutine() -> None:
    async def scenario() -> None:
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        cleaned: list[bool] = []

        async def hand_over() -> int:
            try:
                return await future
            finally:
                cleaned.append(True)

        task = await first_step(hand_over())
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert cleaned == [True]
        assert future.cancelled()  # what the coroutine waited on is cancelled too

    asyncio.run(scenario())


def test_a_commit_that_cannot_finish_does_not_hold_up_the_rebalance(
        monkeypatch: pytest.MonkeyPatch) -> None:
    revoked = {TP("events", 0)}
    handed_on: list[set[TP]] = []

    async def never(*args: Any, **kwargs: Any) -> bool:
        await asyncio.Event().wait()  # a coordinator that never answers
        return True

    async def faust_revoke(self: Any, partitions: set[TP]) -> None:
        handed_on.append(partitions)

    monkeypatch.setattr(consumer_module, "COMMIT_BEFORE_REBALANCE_TIMEOUT", 0.05)
    monkeypatch.setattr(AIOKafkaConsumer, "on_partitions_revoked", faust_revoke)
    monkeypatch.setattr(FanoutConsumer, "commit", never)
    consumer = FanoutConsumer.__new__(FanoutConsumer)  # no app: only the revocation runs

    asyncio.run(asyncio.wait_for(consumer.on_partitions_revoked(revoked), 5))
    assert handed_on == [revoked]  # Faust's own revocation ran after the bounded commit
