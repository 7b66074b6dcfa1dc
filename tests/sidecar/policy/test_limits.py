"""Rate limits: token buckets with the real wait in retry-after, settlement, and the
concurrency cap's queue."""

from __future__ import annotations

import asyncio

import pytest

from sidecar.errors import PolicyDenied, RateLimited
from sidecar.policy.config import LimitsConfig
from sidecar.policy.limits import RateLimits, Slots, TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_bucket_refills_continuously_with_no_window_edge() -> None:
    clock = Clock()
    b = TokenBucket("requests_per_minute", 60, clock)
    for _ in range(60):
        assert b.wait(1) == 0
        b.take(1)
    assert b.wait(1) == pytest.approx(1.0)  # 60/min refills one a second
    clock.now += 0.5
    assert b.wait(1) == pytest.approx(0.5)
    clock.now += 0.5
    assert b.wait(1) == 0
    # A fixed window would hand out another 60 at once at its edge; the bucket does not.
    clock.now += 1
    b.take(1)
    assert b.wait(2) == pytest.approx(1.0)


def test_bucket_never_holds_more_than_a_minute_and_can_go_into_debt() -> None:
    clock = Clock()
    b = TokenBucket("input_tokens_per_minute", 6000, clock)
    clock.now += 3600
    assert b.available() == 6000
    b.take(10000)  # a request that used more than it reserved
    assert b.available() == -4000
    assert b.wait(100) == pytest.approx(41.0)  # (100 + 4000) / 100 per second
    assert b.wait(7000) == float("inf")


def limits(clock: Clock, **kw: object) -> RateLimits:
    return RateLimits(LimitsConfig(**kw), clock)  # type: ignore[arg-type]


def test_refusal_names_the_limit_and_waits_the_real_time() -> None:
    clock = Clock()
    rl = limits(clock, requests_per_minute=2, input_tokens_per_minute=60000)
    rl.take(False, 10000, 0)
    rl.take(False, 10000, 0)
    with pytest.raises(RateLimited) as err:
        rl.check(100, 0)
    assert err.value.headers == {"retry-after": "30", "retry-after-ms": "30000"}
    assert err.value.message == "requests_per_minute = 2: this request (1 request) fits again in 30 s"
    clock.now += 10
    with pytest.raises(RateLimited) as err:
        rl.check(45000, 0)  # 40,000 + 10 s x 1,000/s = 50,000 held: the request fits, the rpm not yet
    assert err.value.headers["retry-after"] == "20"


def test_input_tokens_wait_for_the_bucket_to_refill() -> None:
    rl = limits(Clock(), input_tokens_per_minute=60000)
    rl.take(False, 50000, 0)
    with pytest.raises(RateLimited) as err:
        rl.check(25000, 0)
    assert err.value.headers == {"retry-after": "15", "retry-after-ms": "15000"}
    assert err.value.message == "input_tokens_per_minute = 60,000: this request (25,000 input tokens) fits again in 15 s"
    rl.check(10000, 0)


def test_the_longest_wait_of_all_buckets_is_the_retry_after() -> None:
    clock = Clock()
    rl = limits(clock, requests_per_minute=600, input_tokens_per_minute=60000, output_tokens_per_minute=6000)
    rl.take(False, 30000, 6000)
    with pytest.raises(RateLimited) as err:
        rl.check(40000, 3000)  # input waits 10 s, output 30 s
    assert err.value.headers["retry-after"] == "30"
    assert err.value.message.startswith("output_tokens_per_minute = 6,000: this request (3,000 output tokens) fits again in 30 s")


def test_a_request_larger_than_a_minute_of_tokens_is_denied() -> None:
    rl = limits(Clock(), input_tokens_per_minute=20000)
    with pytest.raises(PolicyDenied, match="needs about 27,000 input tokens, more than input_tokens_per_minute = 20,000 allows in a minute"):
        rl.check(27000, 0)


def test_settlement_gives_back_what_was_not_used_and_charges_what_was() -> None:
    clock = Clock()
    rl = limits(clock, requests_per_minute=10, input_tokens_per_minute=60000, output_tokens_per_minute=6000)
    ticket = rl.take(False, 20000, 4000)
    rl.settle(ticket, 500, 5000, dispatched=True)
    assert rl.input is not None and rl.output is not None and rl.requests is not None
    assert rl.input.available() == 59500 and rl.output.available() == 1000 and rl.requests.available() == 9
    refused = rl.take(False, 1000, 1000)
    rl.settle(refused, 0, 0, dispatched=False)  # never went upstream: the request comes back
    assert rl.requests.available() == 9 and rl.input.available() == 59500


def test_a_request_that_needs_nothing_extra_passes_when_no_limit_is_set() -> None:
    rl = limits(Clock())
    assert not rl.configured
    rl.check(10**9, 10**9)


async def test_slots_queue_in_order_and_time_out() -> None:
    slots = Slots(2)
    assert await slots.acquire(0) and await slots.acquire(0)
    assert not await slots.acquire(0)  # full, and no patience
    order: list[int] = []

    async def waiter(n: int) -> None:
        if await slots.acquire(5):
            order.append(n)

    tasks = [asyncio.ensure_future(waiter(n)) for n in range(3)]
    await asyncio.sleep(0)
    assert slots.waiting == 3
    for _ in range(3):
        slots.release()
        await asyncio.sleep(0)
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2] and slots.in_use == 2
    slots.release()
    slots.release()
    assert slots.in_use == 0


async def test_a_cancelled_waiter_passes_its_slot_on() -> None:
    slots = Slots(1)
    assert await slots.acquire(0)
    gone = asyncio.ensure_future(slots.acquire(5))
    kept = asyncio.ensure_future(slots.acquire(5))
    await asyncio.sleep(0)
    gone.cancel()
    slots.release()
    assert await kept is True
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert slots.in_use == 1 and slots.waiting == 0


async def test_concurrency_cap_refuses_after_the_queue_wait() -> None:
    rl = RateLimits(LimitsConfig(max_concurrent=1, queue_seconds=0.05))
    assert await rl.acquire_slot() is True
    with pytest.raises(RateLimited) as err:
        await rl.acquire_slot()
    assert err.value.headers == {"retry-after": "1"}
    assert err.value.message == "max_concurrent = 1: that many requests are in flight and none finished within 0.05 s"
    rl.release_slot()
    assert await rl.acquire_slot() is True
