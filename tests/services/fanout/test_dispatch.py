"""Ordered acknowledgement and the per-endpoint dispatcher."""

from __future__ import annotations

import asyncio
import bisect
import time

from services.fanout.dispatch import EndpointDispatcher, OrderedAcks, RateLimiter


def test_acks_are_released_in_offset_order_per_partition() -> None:
    acked: list[tuple[str, int]] = []
    acks = OrderedAcks()
    slots = {(p, n): acks.track(p, lambda p=p, n=n: acked.append((p, n)))
             for p in ("a", "b") for n in range(3)}

    assert acks.done(slots["a", 1]) == 0      # offset 0 of "a" still running
    assert acks.done(slots["b", 0]) == 1      # partitions are independent
    assert acks.done(slots["a", 2]) == 0
    assert acks.done(slots["a", 0]) == 3      # the gap closed: 0, 1, 2 at once
    assert acked == [("b", 0), ("a", 0), ("a", 1), ("a", 2)]
    assert acks.pending == 2


def test_forgotten_partitions_ack_nothing_later() -> None:
    acked: list[int] = []
    acks = OrderedAcks()
    slot = acks.track("a", lambda: acked.append(1))
    acks.forget({"a"})
    assert acks.done(slot) == 0 and acked == [] and acks.pending == 0


async def test_a_hanging_endpoint_does_not_hold_back_another() -> None:
    dispatcher = EndpointDispatcher(concurrency=10, per_endpoint=2)
    release = asyncio.Event()
    started: list[str] = []
    finished: list[str] = []

    def job(name: str, hang: bool = False):  # type: ignore[no-untyped-def]
        async def run() -> None:
            started.append(name)
            if hang:
                await release.wait()
            finished.append(name)
        return run

    for n in range(5):
        dispatcher.submit("slow", job(f"slow{n}", hang=True))
        dispatcher.submit("fast", job(f"fast{n}"))
    for _ in range(50):
        await asyncio.sleep(0)
    assert finished == [f"fast{n}" for n in range(5)]
    assert sorted(s for s in started if s.startswith("slow")) == ["slow0", "slow1"]  # limit 2
    assert dispatcher.in_flight == 2 and dispatcher.queued == 3
    release.set()
    for _ in range(50):
        await asyncio.sleep(0)
    assert len(finished) == 10
    await dispatcher.close()


async def test_global_concurrency_is_bounded() -> None:
    dispatcher = EndpointDispatcher(concurrency=3, per_endpoint=5)
    release = asyncio.Event()

    async def hang() -> None:
        await release.wait()

    for n in range(6):
        dispatcher.submit(f"ep{n}", hang)
    for _ in range(20):
        await asyncio.sleep(0)
    assert dispatcher.in_flight == 3
    release.set()
    for _ in range(20):
        await asyncio.sleep(0)
    assert dispatcher.in_flight == 0
    await dispatcher.close()


async def test_due_later_jobs_wait_on_a_timer_and_failing_jobs_are_retried() -> None:
    dispatcher = EndpointDispatcher(concurrency=5, per_endpoint=5)
    order: list[str] = []
    attempts = 0

    async def flaky() -> None:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise RuntimeError("kafka unavailable")
        order.append("flaky")

    async def record(name: str) -> None:
        order.append(name)

    dispatcher.submit_at(0.2, "ep", lambda: record("later"))
    dispatcher.submit("ep", lambda: record("now"))
    assert dispatcher.waiting == 1
    dispatcher.submit("other", flaky)
    await asyncio.sleep(1.0)
    assert order[0] == "now" and set(order) == {"now", "later", "flaky"}
    assert attempts == 2 and dispatcher.waiting == 0
    await dispatcher.close()


async def test_close_cancels_waiting_timers() -> None:
    dispatcher = EndpointDispatcher(concurrency=1, per_endpoint=1)
    ran: list[int] = []

    async def job() -> None:
        ran.append(1)

    dispatcher.submit_at(0.05, "ep", job)
    await dispatcher.close()
    await asyncio.sleep(0.1)
    assert ran == [] and dispatcher.waiting == 0


def most_in_a_window(starts: list[float], window: float = 1.0) -> int:
    """The most starts in any half-open window of ``window`` seconds."""
    starts = sorted(starts)
    return max((bisect.bisect_left(starts, at + window) - n for n, at in enumerate(starts)),
               default=0)


async def test_a_rate_limit_holds_in_every_one_second_window() -> None:
    # 4 per second, 10 jobs submitted at once, several drains competing (per_endpoint=3):
    # never more than 4 in a second, each a quarter of a second after the one before.
    dispatcher = EndpointDispatcher(concurrency=10, per_endpoint=3)
    starts: list[float] = []

    async def job() -> None:
        starts.append(time.monotonic())

    for _ in range(10):
        dispatcher.submit("ep", job, rate_limit=4)
    while len(starts) < 10:
        await asyncio.sleep(0.01)
    assert most_in_a_window(starts) == 4, starts
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert min(gaps) >= 0.25 - 0.002, gaps  # spaced out, not a burst (timer resolution)
    assert most_in_a_window(starts, window=0.5) == 2
    await dispatcher.close()


async def test_a_rate_limit_holds_for_jobs_that_arrive_one_by_one() -> None:
    # Light traffic: each job arrives after the previous one finished, so the endpoint's
    # queue is empty in between; the limit must hold all the same.
    dispatcher = EndpointDispatcher(concurrency=10, per_endpoint=10)
    starts: list[float] = []

    async def job() -> None:
        starts.append(time.monotonic())

    for n in range(6):
        dispatcher.submit("ep", job, rate_limit=2)
        while len(starts) <= n:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)  # arrivals 50 ms apart would otherwise all be sent so
    assert most_in_a_window(starts) == 2, starts

    # Idle for longer than the window, the limiter is dropped (bounded memory): a fresh
    # one would allow the next jobs at once, as the old one would by then.
    await asyncio.sleep(1.1)
    assert dispatcher._limiters == {} and dispatcher._forgetting == {}
    await dispatcher.close()


async def test_paced_attempts_and_jobs_share_the_endpoints_limit() -> None:
    # An ordered endpoint's lane paces its attempts with the dispatcher's limiter: with
    # both at work, the endpoint still gets at most its rate per window.
    dispatcher = EndpointDispatcher(concurrency=10, per_endpoint=10)
    starts: list[float] = []

    async def job() -> None:
        starts.append(time.monotonic())

    async def lane() -> None:
        for _ in range(3):
            await dispatcher.pace("ep", 3)
            starts.append(time.monotonic())

    for _ in range(4):
        dispatcher.submit("ep", job, rate_limit=3)
    await lane()
    while len(starts) < 7:
        await asyncio.sleep(0.01)
    assert most_in_a_window(starts) == 3, starts
    await asyncio.sleep(1.1)
    assert dispatcher._limiters == {}  # forgotten once idle, also after paced attempts
    await dispatcher.close()


async def test_a_start_counts_when_it_gets_its_global_slot() -> None:
    # Another endpoint holds the only global slot for 0.6 s: the limited endpoint's first
    # two jobs start when it is free, and the next two not within a second of them.
    dispatcher = EndpointDispatcher(concurrency=1, per_endpoint=2)
    starts: list[float] = []

    async def hog() -> None:
        await asyncio.sleep(0.6)

    async def job() -> None:
        starts.append(time.monotonic())

    dispatcher.submit("other", hog)
    await asyncio.sleep(0)
    for _ in range(4):
        dispatcher.submit("ep", job, rate_limit=2)
    while len(starts) < 4:
        await asyncio.sleep(0.01)
    assert most_in_a_window(starts) == 2, starts
    await dispatcher.close()


def test_a_resized_limiter_remembers_its_recent_starts() -> None:
    limiter = RateLimiter(2, [time.monotonic()] * 2)
    assert limiter.busy_for() > 0.9
    smaller = limiter.resized(1)
    assert smaller.rate == 1 and smaller.busy_for() > 0.9


async def test_finish_steps_run_outside_the_endpoint_slot() -> None:
    dispatcher = EndpointDispatcher(concurrency=1, per_endpoint=1)
    kafka_ack = asyncio.Event()
    sent: list[int] = []
    recorded: list[int] = []

    def job(n: int):  # type: ignore[no-untyped-def]
        async def http() -> object:
            sent.append(n)

            async def finish() -> None:
                await kafka_ack.wait()  # a slow broker acknowledgement
                recorded.append(n)
            return finish
        return http

    for n in range(3):
        dispatcher.submit("ep", job(n))
    for _ in range(30):
        await asyncio.sleep(0)
    assert sent == [0, 1, 2] and recorded == []  # the slot was free for the next attempt
    kafka_ack.set()
    for _ in range(30):
        await asyncio.sleep(0)
    assert sorted(recorded) == [0, 1, 2]
    await dispatcher.close()


def test_forgetting_a_partition_cancels_its_slots() -> None:
    acks = OrderedAcks()
    kept, revoked = acks.track("a", lambda: None), acks.track("b", lambda: None)
    acks.forget({"b"})
    assert revoked.cancelled and not kept.cancelled


async def test_jobs_beyond_an_endpoints_queue_bound_overflow() -> None:
    dispatcher = EndpointDispatcher(concurrency=10, per_endpoint=1, max_queued=2)
    release = asyncio.Event()
    ran: list[str] = []
    overflowed: list[str] = []

    def job(name: str):  # type: ignore[no-untyped-def]
        async def run() -> None:
            await release.wait()
            ran.append(name)
        return run

    def overflow(name: str):  # type: ignore[no-untyped-def]
        async def run() -> None:
            overflowed.append(name)
        return run

    for n in range(6):
        dispatcher.submit("slow", job(f"slow{n}"), overflow=overflow(f"slow{n}"))
    dispatcher.submit("other", job("other0"), overflow=overflow("other0"))
    dispatcher.submit("slow", job("no-overflow-step"))  # without one, it queues anyway
    for _ in range(20):
        await asyncio.sleep(0)
    # A job counts as queued until a runner picks it up: submitted back to back, two wait
    # and the rest overflow. Another endpoint is unaffected.
    assert overflowed == ["slow2", "slow3", "slow4", "slow5"]
    assert dispatcher.in_flight == 2  # "slow0" and "other0", waiting for the release
    release.set()
    for _ in range(50):
        await asyncio.sleep(0)
    assert sorted(ran) == ["no-overflow-step", "other0", "slow0", "slow1"]
    await dispatcher.close()


async def test_drain_finishes_what_runs_and_starts_nothing_else() -> None:
    """SIGTERM: the attempt under way ends and its outcome is recorded; a queued job, a
    job waiting for its due time and a job submitted meanwhile never start (their
    messages stay unacknowledged, for the next owner)."""
    dispatcher = EndpointDispatcher(concurrency=10, per_endpoint=1)
    release = asyncio.Event()
    ran: list[str] = []

    def job(name: str, hang: bool = False):  # type: ignore[no-untyped-def]
        async def run():  # type: ignore[no-untyped-def]
            ran.append(name)
            if hang:
                await release.wait()

            async def finish() -> None:
                await asyncio.sleep(0.01)  # a Kafka write
                ran.append(f"{name} recorded")
            return finish
        return run

    dispatcher.submit("e", job("under way", hang=True))
    dispatcher.submit("e", job("queued"))
    dispatcher.submit_at(0.05, "other", job("waiting"))
    await asyncio.sleep(0)
    draining = asyncio.create_task(dispatcher.drain(timeout=5.0))
    await asyncio.sleep(0.1)
    dispatcher.submit("e", job("submitted while stopping"))
    assert not draining.done()  # the attempt under way holds the drain
    release.set()
    await asyncio.wait_for(draining, 1.0)
    assert ran == ["under way", "under way recorded"]
    assert dispatcher.in_flight == dispatcher.waiting == dispatcher.queued == 0


async def test_drain_gives_up_on_what_outlasts_its_timeout() -> None:
    dispatcher = EndpointDispatcher(concurrency=10, per_endpoint=1)
    hung = asyncio.Event()

    async def hangs() -> None:
        await hung.wait()

    dispatcher.submit("e", hangs)
    await asyncio.sleep(0)
    await asyncio.wait_for(dispatcher.drain(timeout=0.1), 1.0)  # cancelled, not awaited
    assert dispatcher.in_flight == 0
