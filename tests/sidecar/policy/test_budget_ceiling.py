"""A budget is a ceiling: under any concurrency, spend exceeds it by at most the input-token
estimation error of the requests in flight, never by unbounded output.

The race runs a real sidecar on loopback against an upstream that answers with as many
output tokens as `max_tokens` allows, bills the whole prompt as cache writes (dearer than
input) and reports 3% more input tokens than the sidecar's estimate.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.errors import PolicyDenied, RateLimited
from sidecar.policy.budgets import Budgets, Reservation
from sidecar.policy.config import BudgetConfig
from sidecar.providers import tokens as request_tokens
from sidecar.testing import anthropic_sse as sse
from sidecar.testing.fake_server import MessagesUpstream
from sidecar.testing.governed import error_message, governed, policy_state
from sidecar.testing.harness import ledger_rows

MODEL = "ceiling-model"
RATES = {"input": 5.0, "output": 25.0, "cache_read": 0.5, "cache_write": 6.25}  # USD per million tokens
PRICES = f'[pricing."{MODEL}"]\n' + "".join(f"{k} = {v}\n" for k, v in RATES.items())
INPUT_ERROR = 0.03  # the upstream counts 3% more input tokens than the estimate


class GreedyUpstream(MessagesUpstream):
    """An Anthropic upstream that spends every output token a request allows.

    In `short` mode it answers with 5 output tokens (the history the old p90 estimate
    learnt from); otherwise it holds each answer until released and then streams
    `max_tokens` output tokens, `stop_reason: max_tokens`.
    """

    def __init__(self) -> None:
        super().__init__()
        self.short = True

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        payload = await request.json()
        self.received.append(payload)
        estimated = payload["metadata"]["estimated_input"]
        if self.short:
            out = 5
        else:
            await self.released.wait()
            out = min(payload["metadata"].get("output", payload["max_tokens"]), payload["max_tokens"])
        usage = sse.Usage(
            input_tokens=math.ceil(estimated * INPUT_ERROR), output_tokens=out, cache_creation_input_tokens=estimated
        )
        content = sse.content_events([sse.text_block("x " * 20)])
        resp = web.StreamResponse(headers={"content-type": sse.SSE_CONTENT_TYPE})
        await resp.prepare(request)
        for event in sse.stream_events(sse.new_id("msg_01"), MODEL, content, usage, "max_tokens" if out > 5 else "end_turn"):
            await resp.write(event)
        await resp.write_eof()
        return resp


def request_bytes(n: int, max_tokens: int, output: int | None = None, **extra: Any) -> bytes:
    """A request whose metadata tells the upstream the sidecar's input estimate of it (and
    how many output tokens to answer with, when not `max_tokens`)."""
    def encode(est: int) -> bytes:
        meta: dict[str, Any] = {"estimated_input": est} if output is None else {"estimated_input": est, "output": output}
        return json.dumps(
            {
                "model": MODEL,
                "max_tokens": max_tokens,
                "stream": True,
                "metadata": meta,
                "messages": [{"role": "user", "content": f"question {n}: " + "word " * 150}],
                **extra,
            }
        ).encode()

    est = 0
    for _ in range(4):  # the estimate depends on the digits of the estimate
        est = request_tokens.estimate(encode(est), dict)
    raw = encode(est)
    assert request_tokens.estimate(raw, dict) == est
    return raw


async def send(client: aiohttp.ClientSession, url: str, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    headers = {"x-api-key": "sk-ant-test", "content-type": "application/json"}
    async with client.post(url + "/v1/messages", data=raw, headers=headers) as resp:
        return resp.status, dict(resp.headers), await resp.read()


async def test_fifty_concurrent_requests_after_short_answers_stay_under_the_budget(
    hermetic_env: Path, client: aiohttp.ClientSession
) -> None:
    policy = PRICES + "[budget]\ndaily_usd = 1.0\n"
    async with GreedyUpstream() as up, governed(up.url, hermetic_env, policy) as sc:
        for n in range(20):  # a history of short answers
            status, _, _ = await send(client, sc.url, request_bytes(n, 4000))
            assert status == 200
        up.short = False
        tasks = [asyncio.ensure_future(send(client, sc.url, request_bytes(100 + n, 4000))) for n in range(50)]
        # Everything refused comes back while the admitted requests are held upstream.
        while len(up.received) - 20 + sum(t.done() for t in tasks) < 50:
            await asyncio.wait([t for t in tasks if not t.done()], timeout=0.01)
        admitted = len(up.received) - 20
        up.released.set()
        results = await asyncio.gather(*tasks)
        state = await policy_state(client, sc)
        rows = await ledger_rows(sc)

    statuses = [r[0] for r in results]
    assert statuses.count(200) == admitted >= 1 and statuses.count(429) == 50 - admitted
    for status, headers, raw in results:
        if status == 429:  # the room frees when the requests in flight settle: a short wait
            assert headers["Retry-After"] == "5" and "held by" in error_message(raw)
    spent = sum(float(r["cost_usd"]) for r in rows)  # type: ignore[arg-type]
    # The bound: what the real input cost beyond the worst case priced at the estimate.
    worst_rate = max(RATES["input"], RATES["cache_write"], RATES["cache_read"]) / 1e6
    error = 0.0
    for r in rows:
        if r["status"] == 200:
            billed = r["input_tokens"] * RATES["input"] + r["cache_write_tokens"] * RATES["cache_write"]  # type: ignore[operator]
            error += max(0.0, billed / 1e6 - int(r["cache_write_tokens"]) * worst_rate)  # type: ignore[call-overload]
    overshoot = spent - 1.0
    print(f"\nbudget race: {admitted} of 50 admitted, spent ${spent:.4f} of $1.00, overshoot ${overshoot:+.4f} (bound ${error:.4f})")
    assert spent <= 1.0 + error + 1e-9
    [day] = state["budgets"]
    assert day["spent_usd"] == round(spent, 9) or abs(day["spent_usd"] - spent) < 1e-9
    assert (day["reserved_usd"], day["in_flight"]) == (0.0, 0)
    # Requests that did not fit whole were clamped: their max_tokens went down, never below the floor.
    limits = sorted(p["max_tokens"] for p in up.received[20:])
    assert limits[0] >= 1024 and limits[-1] == 4000


async def test_a_request_that_does_not_fit_whole_gets_a_lower_max_tokens_and_a_valid_thinking_budget(
    hermetic_env: Path, client: aiohttp.ClientSession
) -> None:
    policy = PRICES + '[usage]\ntimezone = "UTC"\n[budget]\ndaily_usd = 1.0\n'
    async with GreedyUpstream() as up, governed(up.url, hermetic_env, policy) as sc:
        up.short = False
        up.released.set()
        thinking = {"type": "enabled", "budget_tokens": 50_000}
        # $1.60 of output does not fit $1: max_tokens goes down to what fits, thinking halves.
        first = await send(client, sc.url, request_bytes(1, 64_000, output=38_000, thinking=thinking))
        # About $0.05 is left: room for ~1,900 tokens, too few for the 1,024-token thinking minimum.
        second = await send(client, sc.url, request_bytes(2, 64_000, thinking={"type": "enabled", "budget_tokens": 3000}))
        # Nothing is left, nothing is in flight: refused until the reset, naming the budget.
        third = await send(client, sc.url, request_bytes(3, 64_000))
        rows = await ledger_rows(sc)

    assert (first[0], second[0]) == (200, 200)
    a, b = up.received
    assert 39_000 < a["max_tokens"] < 40_000 and a["thinking"] == {"type": "enabled", "budget_tokens": a["max_tokens"] // 2}
    assert 1024 <= b["max_tokens"] < 2048 and "thinking" not in b
    assert third[0] == 429 and third[1].get("x-should-retry") == "false"
    assert re.match(r"claude-sidecar: the daily budget of \$1\.00 (is used up|cannot fit this request)", error_message(third[2]))
    assert "it resets at" in error_message(third[2]) and len(up.received) == 2
    assert sum(float(r["cost_usd"]) for r in rows) <= 1.0 + 0.001  # type: ignore[arg-type]


async def test_a_request_with_room_for_its_whole_worst_case_is_left_alone(
    hermetic_env: Path, client: aiohttp.ClientSession
) -> None:
    policy = PRICES + "[budget]\ndaily_usd = 100.0\n"
    async with GreedyUpstream() as up, governed(up.url, hermetic_env, policy) as sc:
        raw = request_bytes(1, 64_000, thinking={"type": "enabled", "budget_tokens": 50_000})
        status, _, _ = await send(client, sc.url, raw)
    assert status == 200 and up.received == [json.loads(raw)]


# ---------------------------------------------------------------- the arithmetic, any order

FLOOR = 1024
Op = tuple[str, int, float, float, int]  # ("arrive", _, base USD, USD per token, max_tokens) | ("settle", which, used, input error, _)

ops_strategy = st.lists(
    st.one_of(
        st.tuples(st.just("arrive"), st.just(0), st.floats(0, 0.3), st.sampled_from([0.0, 1e-6, 2.5e-5, 7.5e-5]), st.integers(0, 64_000)),
        st.tuples(st.just("settle"), st.integers(0, 1_000), st.floats(0, 1), st.floats(0, 0.02), st.just(0)),
    ),
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(
    limits=st.tuples(st.floats(0.05, 5), st.one_of(st.none(), st.floats(0.05, 10)), st.one_of(st.none(), st.floats(0.05, 20))),
    spent_before=st.floats(0, 1),
    ops=ops_strategy,
)
def test_reservations_and_settlements_in_any_order_never_pass_the_ceiling(
    limits: tuple[float, float | None, float | None], spent_before: float, ops: list[Op]
) -> None:
    """Requests arrive and settle in any order; each really costs at most its worst case
    plus an input error. Spend never passes a limit by more than those errors, what is
    reserved is exactly what is in flight, and a request is only clamped or refused when
    its whole worst case did not fit."""
    day, week, month = limits
    b = Budgets(BudgetConfig(daily_usd=day, weekly_usd=week, monthly_usd=month), ZoneInfo("UTC"), lambda: 1_800_000_000.0)
    b.load(lambda start: spent_before)
    base_spent = {w.period: w.spent for w in b.windows}
    held: list[tuple[Reservation, float, int]] = []  # reservation, base USD, output tokens
    errors = 0.0
    for kind, which, x, y, wanted in ops:
        if kind == "arrive":
            fit_whole = all(w.spent + w.reserved + x + wanted * y <= w.limit for w in b.windows)
            try:
                res, tokens = b.reserve_output(x, y, wanted, FLOOR)
            except (RateLimited, PolicyDenied):
                least = x + min(wanted, FLOOR) * y
                assert not all(w.spent + w.reserved + least <= w.limit for w in b.windows)
                continue
            assert tokens == wanted if fit_whole else min(wanted, FLOOR) <= tokens < wanted
            assert res.amount == x + tokens * y
            held.append((res, x, tokens))
        elif held:
            res, base, _ = held.pop(which % len(held))
            errors += base * y  # the input the provider counted beyond the estimate
            b.settle(res, base * (1 + y) + x * (res.amount - base))  # x: the share of the output allowed that was used
        for w in b.windows:
            assert w.in_flight == len(held)
            assert w.reserved == pytest.approx(sum(r.amount for r, _, _ in held), abs=1e-9)
            assert w.spent + w.reserved <= max(w.limit, base_spent[w.period]) + errors + 1e-9
