"""Rate limits: requests and tokens per minute as token buckets, and a concurrency cap.

A bucket holds a minute's worth and refills continuously at limit/60 per second, so there
is no fixed window to burst across (a fixed window admits twice the limit around its
edge). A request that does not fit gets 429 `rate_limit_error` with `retry-after` set to
the real wait: when the bucket will hold what the request needs (always within a minute,
so Claude Code waits and retries instead of giving up).

Input tokens are taken from the estimate when the request is admitted and settled with
the reported usage afterwards; like Anthropic's own limits, cache reads do not count.
Output tokens are taken from the output estimate and settled the same way; a bucket may
go below zero when a request used more than it reserved, which delays the next ones.

The concurrency cap queues a request for a free slot (first come, first served) for up
to `queue_seconds`, then refuses it.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sidecar.errors import PolicyDenied, RateLimited
from sidecar.policy.config import LimitsConfig

Clock = Callable[[], float]
CONCURRENCY_RETRY_SECONDS = 1
# A wait this short is float noise: retry-after(-ms) round it away, so a request retried when
# they said must fit then, not get a second 429.
_NOISE_SECONDS = 1e-6


class TokenBucket:
    """`per_minute` units, refilled continuously; a full bucket holds one minute's worth."""

    def __init__(self, name: str, per_minute: int, clock: Clock) -> None:
        self.name = name
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.clock = clock
        self.level = self.capacity
        self._stamp = clock()

    def _refill(self) -> None:
        now = self.clock()
        self.level = min(self.capacity, self.level + (now - self._stamp) * self.rate)
        self._stamp = now

    def wait(self, amount: float) -> float:
        """Seconds until `amount` fits (0: now; inf: never, it is more than a full bucket)."""
        if amount > self.capacity:
            return math.inf
        self._refill()
        wait = (amount - self.level) / self.rate
        return 0.0 if wait <= _NOISE_SECONDS else wait

    def take(self, amount: float) -> None:
        """Remove `amount` (the level may go negative: a debt the refill pays off)."""
        self._refill()
        self.level -= amount

    def resize(self, per_minute: int) -> None:
        """A new limit from now on; what was used of the old one (not yet refilled) counts."""
        self._refill()
        used = self.capacity - self.level
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.level = self.capacity - used

    def give(self, amount: float) -> None:
        """Return `amount` (a reservation that was not used), up to a full bucket."""
        self._refill()
        self.level = min(self.capacity, self.level + amount)

    def available(self) -> float:
        """What the bucket holds now."""
        self._refill()
        return self.level


class Slots:
    """At most `limit` requests at once; the others wait in order for a slot."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_use = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def acquire(self, max_wait: float) -> bool:
        """Take a slot, waiting up to `max_wait` seconds; False when none freed in time."""
        if self.in_use < self.limit and not self._waiters:
            self.in_use += 1
            return True
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await asyncio.wait_for(asyncio.shield(fut), max_wait)
        except TimeoutError:
            if fut.done() and not fut.cancelled():
                return True  # the slot was handed over just as the wait ended
            fut.cancel()
            return False
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # handed over to a request that has gone: pass it on
            fut.cancel()
            raise
        return True

    def resize(self, limit: int) -> None:
        """A new cap: requests holding slots keep them; waiters get the room a raise makes."""
        self.limit = limit
        while self.in_use < self.limit and self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                self.in_use += 1
                fut.set_result(None)

    def release(self) -> None:
        """Free a slot, or hand it straight to the longest waiter."""
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return
        self.in_use -= 1

    @property
    def waiting(self) -> int:
        """Requests queued for a slot."""
        return sum(1 for f in self._waiters if not f.done())


@dataclass
class Ticket:
    """What one admitted request holds until it settles."""

    slot: bool
    input_tokens: int
    output_tokens: int


class RateLimits:
    """The configured buckets and the concurrency cap."""

    def __init__(self, cfg: LimitsConfig, clock: Clock = time.monotonic) -> None:
        self.cfg = cfg
        self.clock = clock
        self.requests = TokenBucket("requests_per_minute", cfg.requests_per_minute, clock) if cfg.requests_per_minute else None
        self.input = TokenBucket("input_tokens_per_minute", cfg.input_tokens_per_minute, clock) if cfg.input_tokens_per_minute else None
        self.output = TokenBucket("output_tokens_per_minute", cfg.output_tokens_per_minute, clock) if cfg.output_tokens_per_minute else None
        self.slots = Slots(cfg.max_concurrent) if cfg.max_concurrent else None
        self._slots = self.slots  # kept when the cap is lifted: requests in flight still release

    def reconfigure(self, cfg: LimitsConfig) -> None:
        """Take new limits now (a policy change); requests in flight settle as admitted."""
        for attr, name in (("requests", "requests_per_minute"), ("input", "input_tokens_per_minute"), ("output", "output_tokens_per_minute")):
            per_minute, bucket = getattr(cfg, name), getattr(self, attr)
            if not per_minute:
                setattr(self, attr, None)
            elif bucket is None:
                setattr(self, attr, TokenBucket(name, per_minute, self.clock))
            else:
                bucket.resize(per_minute)
        if cfg.max_concurrent:
            if self._slots is None:
                self._slots = Slots(cfg.max_concurrent)
            else:
                self._slots.resize(cfg.max_concurrent)
            self.slots = self._slots
        else:
            if self._slots is not None:
                self._slots.resize(2**31)  # the queue drains; holders still release
            self.slots = None
        self.cfg = cfg

    @property
    def configured(self) -> bool:
        """Whether any limit is set."""
        return any(x is not None for x in (self.requests, self.input, self.output, self.slots))

    async def acquire_slot(self) -> bool:
        """Wait for a concurrency slot (True), or raise RateLimited when none freed in time."""
        if self.slots is None:
            return False
        if not await self.slots.acquire(self.cfg.queue_seconds):
            raise RateLimited(
                f"max_concurrent = {self.slots.limit}: that many requests are in flight and none finished "
                f"within {self.cfg.queue_seconds:g} s",
                headers={"retry-after": str(CONCURRENCY_RETRY_SECONDS)},
            )
        return True

    def check(self, input_tokens: int, output_tokens: int) -> None:
        """Raise RateLimited (with the real wait) unless every bucket holds the request now."""
        needs = [(b, n) for b, n in ((self.requests, 1), (self.input, input_tokens), (self.output, output_tokens)) if b is not None]
        waits = [(b.wait(n), b, n) for b, n in needs]
        if not waits:
            return
        wait, bucket, need = max(waits, key=lambda w: w[0])
        if wait == 0:
            return
        per_minute = int(bucket.capacity)
        if math.isinf(wait):
            raise PolicyDenied(
                f"this request needs about {need:,} {_unit(bucket)}, more than {bucket.name} = {per_minute:,} allows in a minute"
            )
        # Whole seconds, rounded up, but not for float noise (20.000000001 s is 20 s).
        seconds = max(1, math.ceil(wait - _NOISE_SECONDS))
        raise RateLimited(
            f"{bucket.name} = {per_minute:,}: this request ({need:,} {_unit(bucket)}) fits again in {seconds} s",
            headers={"retry-after": str(seconds), "retry-after-ms": str(math.ceil((wait - _NOISE_SECONDS) * 1000))},
        )

    def take(self, slot: bool, input_tokens: int, output_tokens: int) -> Ticket:
        """Take what `check` found room for."""
        if self.requests is not None:
            self.requests.take(1)
        if self.input is not None:
            self.input.take(input_tokens)
        if self.output is not None:
            self.output.take(output_tokens)
        return Ticket(slot, input_tokens, output_tokens)

    def settle(self, ticket: Ticket, input_tokens: int, output_tokens: int, dispatched: bool) -> None:
        """Correct the buckets with the real usage and free the slot; a request that never
        went upstream (refused, answered from the cache) gives its request token back."""
        if self.requests is not None and not dispatched:
            self.requests.give(1)
        if self.input is not None:
            self.input.give(ticket.input_tokens - input_tokens)
        if self.output is not None:
            self.output.give(ticket.output_tokens - output_tokens)
        if ticket.slot:
            self.release_slot()

    def release_slot(self) -> None:
        """Free a slot taken by `acquire_slot`."""
        if self._slots is not None:
            self._slots.release()

    def state(self) -> dict[str, Any]:
        """The limits and what is in use (for the control API)."""
        return {
            "requests_per_minute": self.cfg.requests_per_minute,
            "input_tokens_per_minute": self.cfg.input_tokens_per_minute,
            "output_tokens_per_minute": self.cfg.output_tokens_per_minute,
            "max_concurrent": self.cfg.max_concurrent,
            "in_flight": self.slots.in_use if self.slots else None,
            "queued": self.slots.waiting if self.slots else 0,
            "available": {b.name: math.floor(b.available()) for b in (self.requests, self.input, self.output) if b is not None},
        }


def _unit(bucket: TokenBucket) -> str:
    return "request" if bucket.name == "requests_per_minute" else bucket.name.split("_per_")[0].replace("_", " ")
