"""The policy gate in a real sidecar, against real upstreams on loopback: budgets, rate
limits, the concurrency cap, guardrails, tool rules and the control API."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest

from sidecar.policy.budgets import duration
from sidecar.policy.tools import refusal
from sidecar.testing import anthropic_sse as sse
from sidecar.testing.fake_anthropic import FakeAnthropic, Text, ToolUse
from sidecar.testing.governed import (
    HeldUpstream,
    body,
    error_message,
    governed,
    policy_state,
    post,
)
from sidecar.testing.harness import ledger_rows
from sidecar.testing.secret_samples import AWS_ID, GITHUB

KOLKATA = ZoneInfo("Asia/Kolkata")


def next_local_midnight(tz: ZoneInfo) -> datetime:
    today = datetime.now(tz).date()
    return datetime.combine(today + timedelta(days=1), datetime.min.time(), tzinfo=tz)


# ---------------------------------------------------------------- budgets


async def test_an_exhausted_budget_is_refused_with_which_budget_what_was_spent_and_the_reset(
    fake: FakeAnthropic, hermetic_env: Path, client: aiohttp.ClientSession
) -> None:
    policy = '[usage]\ntimezone = "Asia/Kolkata"\n[budget]\ndaily_usd = 1.0\n'
    fake.script(Text(usage={"input_tokens": 200_000}))  # $1.00 of input, and 5 output tokens
    async with governed(fake.url, hermetic_env, policy) as sc:
        first = await post(client, sc, body())
        status, headers, raw = await post(client, sc, body())
        rows = await ledger_rows(sc)
    assert first[0] == 200
    assert status == 429 and len(fake.requests) == 1
    assert json.loads(raw)["error"]["type"] == "billing_error"
    wait = int(headers["Retry-After"])
    reset = next_local_midnight(KOLKATA)
    assert abs(wait - (reset.timestamp() - time.time())) < 30
    assert error_message(raw) == (
        "claude-sidecar: the daily budget of $1.00 is used up ($1.00 spent today); "
        f"it resets at {reset:%Y-%m-%d} 00:00 Asia/Kolkata (in {duration(wait)}), "
        "so wait until then or raise budget.daily_usd in the sidecar's config."
    )
    # Claude Code stops at once and prints the message; x-should-retry says the same to any SDK.
    assert headers.get("x-should-retry") == "false"
    assert headers["x-sidecar-request-id"] == rows[1]["id"]
    assert [(r["status"], r["outcome"], r["error_type"]) for r in rows] == [(200, "ok", None), (429, "rejected", "billing_error")]


GOV_MODEL = '[pricing."gov-model"]\ninput = 0.0\noutput = 25.0\n'


async def test_twenty_concurrent_streams_overshoot_by_no_more_than_what_was_reserved(
    hermetic_env: Path, client: aiohttp.ClientSession
) -> None:
    """Each request reserves 4,000 output tokens ($0.10) of a $1.00 budget and really uses
    4,800 ($0.12). Held upstream, all 20 are in flight together: exactly 10 are admitted
    (a check-then-deduct gate would let all 20 through, $2.40), the rest are told to wait;
    the overshoot is the admitted requests' excess over their reservations, $0.20."""
    policy = GOV_MODEL + "[budget]\ndaily_usd = 1.0\ndefault_output_tokens = 4000\n"
    async with HeldUpstream({"input_tokens": 0, "output_tokens": 4800}) as up, governed(up.url, hermetic_env, policy) as sc:
        payload = body(model="gov-model", max_tokens=4000)
        tasks = [asyncio.ensure_future(post(client, sc, payload)) for _ in range(20)]
        refused = []
        while len(refused) < 10:  # the refusals come back while the admitted ones are held
            done, _ = await asyncio.wait([t for t in tasks if t not in refused], return_when=asyncio.FIRST_COMPLETED)
            refused.extend(done)
        await up.wait_received(10)
        held = await policy_state(client, sc)
        up.released.set()
        results = await asyncio.gather(*tasks)
        after = await policy_state(client, sc)
        late = await post(client, sc, payload)

    assert len(up.received) == 10
    assert sorted(r[0] for r in results) == [200] * 10 + [429] * 10
    for status, headers, raw in results:
        if status == 429:
            assert headers["Retry-After"] == "5" and "x-should-retry" not in headers
            assert "daily budget: $0.00 of $1.00 spent today and $1.00 held by 10 request(s) in flight" in error_message(raw)
        else:
            assert raw.endswith(b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n")
    [day] = held["budgets"]
    assert (day["spent_usd"], day["reserved_usd"], day["in_flight"]) == (0.0, pytest.approx(1.0), 10)
    [day] = after["budgets"]
    assert (day["reserved_usd"], day["in_flight"]) == (0.0, 0)
    assert day["spent_usd"] == pytest.approx(1.20)
    overshoot = day["spent_usd"] - 1.0
    assert overshoot == pytest.approx(10 * (0.12 - 0.10)) and overshoot <= 1.0
    assert late[0] == 429 and "the daily budget of $1.00 is used up ($1.20 spent today)" in error_message(late[2])


async def test_settlement_uses_the_reported_usage_priced_like_the_ledger(
    fake: FakeAnthropic, hermetic_env: Path, client: aiohttp.ClientSession
) -> None:
    usage = {"input_tokens": 1000, "output_tokens": 500, "cache_read_input_tokens": 20000, "cache_creation_input_tokens": 3000}
    fake.script(Text(usage=usage), Text(usage=usage))
    policy = "[budget]\nmonthly_usd = 50\n[limits]\ninput_tokens_per_minute = 100000\noutput_tokens_per_minute = 60000\n"
    async with governed(fake.url, hermetic_env, policy) as sc:
        t0 = time.monotonic()
        await post(client, sc, body(stream=True))
        await post(client, sc, body(stream=False))
        state = await policy_state(client, sc)
        elapsed = time.monotonic() - t0
        rows = await ledger_rows(sc)
    cost = (1000 * 5 + 500 * 25 + 20000 * 0.5 + 3000 * 6.25) / 1e6
    [month] = state["budgets"]
    assert month["spent_usd"] == pytest.approx(2 * cost) and month["reserved_usd"] == 0.0
    assert [r["cost_usd"] for r in rows] == [pytest.approx(cost)] * 2
    # The buckets were charged what was used (cache reads do not count), however much was
    # estimated; they only refill from there.
    available = state["limits"]["available"]
    assert 100000 - 2 * 4000 <= available["input_tokens_per_minute"] <= 100000 - 2 * 4000 + elapsed * 100000 / 60 + 1
    assert 60000 - 2 * 500 <= available["output_tokens_per_minute"] <= 60000 - 2 * 500 + elapsed * 1000 + 1


async def test_spend_survives_a_restart(fake: FakeAnthropic, hermetic_env: Path, client: aiohttp.ClientSession) -> None:
    policy = "[budget]\ndaily_usd = 10\nweekly_usd = 20\n"
    fake.script(Text(usage={"input_tokens": 100_000, "output_tokens": 0}))
    async with governed(fake.url, hermetic_env, policy) as sc:
        await post(client, sc, body())
    async with governed(fake.url, hermetic_env, policy) as sc:
        state = await policy_state(client, sc)
    assert [b["spent_usd"] for b in state["budgets"]] == [0.5, 0.5]


async def test_a_threshold_crossing_is_an_event(fake: FakeAnthropic, hermetic_env: Path, client: aiohttp.ClientSession) -> None:
    policy = "[budget]\ndaily_usd = 1.0\nthresholds = [0.5]\n"
    fake.script(Text(usage={"input_tokens": 120_000}))  # $0.60
    async with governed(fake.url, hermetic_env, policy) as sc:
        async with client.get(sc.url + "/sidecar/v1/events", headers={"authorization": f"Bearer {sc.token}"}) as events:
            await events.content.readuntil(b"\n\n")  # hello
            await post(client, sc, body())
            found: dict[str, Any] = {}
            while not found:
                chunk = await asyncio.wait_for(events.content.readuntil(b"\n\n"), 10)
                lines = dict(line.split(": ", 1) for line in chunk.decode().strip().splitlines() if not line.startswith(":"))
                if lines.get("event") == "budget_threshold":
                    found = json.loads(lines["data"])
    assert found["period"] == "day" and found["fraction"] == 0.5 and found["limit_usd"] == 1.0
    assert found["spent_usd"] == pytest.approx(0.600125)


async def test_count_tokens_is_free_so_an_exhausted_budget_does_not_stop_it(
    fake: FakeAnthropic, hermetic_env: Path, client: aiohttp.ClientSession
) -> None:
    fake.script(Text(usage={"input_tokens": 400_000}))
    async with governed(fake.url, hermetic_env, "[budget]\ndaily_usd = 1\n") as sc:
        await post(client, sc, body())
        assert (await post(client, sc, body()))[0] == 429
        status, _, raw = await post(client, sc, {"model": "claude-opus-4-8", "messages": [{"role": "user", "content": "x"}]}, "/v1/messages/count_tokens")
    assert status == 200 and "input_tokens" in json.loads(raw)


# ---------------------------------------------------------------- rate limits


async def test_a_rate_limited_request_gets_429_with_the_real_wait(fake: FakeAnthropic, hermetic_env: Path, client: aiohttp.ClientSession) -> None:
    async with governed(fake.url, hermetic_env, "[limits]\nrequests_per_minute = 1\n") as sc:
        t0 = time.monotonic()
        assert (await post(client, sc, body()))[0] == 200
        status, headers, raw = await post(client, sc, body())
        elapsed = time.monotonic() - t0
        rows = await ledger_rows(sc)
    assert status == 429 and len(fake.requests) == 1
    wait = int(headers["Retry-After"])
    assert 60 - elapsed - 1 <= wait <= 60  # a minute's worth refills one request a minute
    assert int(headers["retry-after-ms"]) <= wait * 1000
    assert error_message(raw) == f"claude-sidecar: requests_per_minute = 1: this request (1 request) fits again in {wait} s"
    assert rows[1]["error_type"] == "rate_limit_error" and rows[1]["outcome"] == "rejected"


async def test_a_refused_request_does_not_use_up_the_rate(fake: FakeAnthropic, hermetic_env: Path, client: aiohttp.ClientSession) -> None:
    policy = '[limits]\nrequests_per_minute = 2\n[policy]\nmodels = ["claude-*"]\n'
    async with governed(fake.url, hermetic_env, policy) as sc:
        for _ in range(3):
            assert (await post(client, sc, body(model="gpt-5")))[0] == 400
        assert [(await post(client, sc, body()))[0] for _ in range(3)] == [200, 200, 429]


async def test_the_concurrency_cap_refuses_when_no_slot_frees(hermetic_env: Path, client: aiohttp.ClientSession) -> None:
    async with HeldUpstream({"input_tokens": 10, "output_tokens": 5}) as up, governed(up.url, hermetic_env, "[limits]\nmax_concurrent = 1\nqueue_seconds = 0\n") as sc:
        first = asyncio.ensure_future(post(client, sc, body()))
        await up.wait_received(1)
        status, headers, raw = await post(client, sc, body())
        up.released.set()
        assert (await first)[0] == 200
        after = await post(client, sc, body())
    assert status == 429 and headers["Retry-After"] == "1"
    assert error_message(raw) == "claude-sidecar: max_concurrent = 1: that many requests are in flight and none finished within 0 s"
    assert after[0] == 200 and len(up.received) == 2


async def test_the_concurrency_cap_queues_a_request_until_a_slot_frees(hermetic_env: Path, client: aiohttp.ClientSession) -> None:
    async with HeldUpstream({"input_tokens": 10, "output_tokens": 5}) as up, governed(up.url, hermetic_env, "[limits]\nmax_concurrent = 2\n") as sc:
        tasks = [asyncio.ensure_future(post(client, sc, body(f"r{i}"))) for i in range(3)]
        await up.wait_received(2)
        state = await policy_state(client, sc)
        while state["limits"]["queued"] < 1:  # each look is a request: the loop yields
            state = await policy_state(client, sc)
        assert len(up.received) == 2  # the third waits in the sidecar, not upstream
        up.released.set()
        results = await asyncio.gather(*tasks)
    assert (state["limits"]["in_flight"], state["limits"]["queued"]) == (2, 1)
    assert [r[0] for r in results] == [200, 200, 200] and len(up.received) == 3


# ---------------------------------------------------------------- models, guardrails, tools


async def test_a_model_outside_the_policy_is_refused(fake: FakeAnthropic, hermetic_env: Path, client: aiohttp.ClientSession) -> None:
    policy = '[policy]\nmodels = ["claude-*"]\ndeny_models = ["claude-opus-*"]\n'
    async with governed(fake.url, hermetic_env, policy) as sc:
        status, _, raw = await post(client, sc, body(model="claude-opus-4-8"))
        ok = await post(client, sc, body(model="claude-sonnet-5"))
    assert status == 400 and json.loads(raw)["error"]["type"] == "invalid_request_error"
    assert error_message(raw) == "claude-sidecar: the model 'claude-opus-4-8' is not allowed by the policy (allowed: claude-*)"
    assert ok[0] == 200 and [r.json()["model"] for r in fake.requests] == ["claude-sonnet-5"]


async def test_secrets_are_redacted_before_they_leave(fake: FakeAnthropic, hermetic_env: Path, client: aiohttp.ClientSession) -> None:
    async with governed(fake.url, hermetic_env, '[guardrails]\nsecrets = "redact"\n') as sc:
        for _ in range(2):
            assert (await post(client, sc, body(f"use {AWS_ID} for the deploy")))[0] == 200
    sent = [r.json()["messages"][0]["content"] for r in fake.requests]
    assert AWS_ID not in json.dumps(sent)
    assert sent[0] == sent[1] and sent[0].startswith("use [REDACTED:aws_access_key:") and sent[0].endswith("] for the deploy")


async def test_a_blocking_guardrail_refuses_and_nothing_leaves(fake: FakeAnthropic, hermetic_env: Path, client: aiohttp.ClientSession) -> None:
    policy = '[guardrails]\nsecrets = "redact"\ndetectors = { github_token = "block" }\n'
    async with governed(fake.url, hermetic_env, policy) as sc:
        payload = body(stream=False)
        payload["messages"] = [
            {"role": "user", "content": "read the env file"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "Read", "input": {"file_path": ".env"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": f"GH_TOKEN={GITHUB}"}]},
        ]
        status, headers, raw = await post(client, sc, payload)
    assert status == 400 and fake.requests == []
    assert json.loads(raw)["error"]["type"] == "policy_blocked" and headers["x-should-retry"] == "false"
    assert error_message(raw) == (
        "claude-sidecar: the prompt holds a GitHub token (messages[2].content[0]), which the guardrail policy blocks "
        "(github_token in messages[2].content[0]). Remove it from the conversation (e.g. with /rewind) and try again."
    )
    assert GITHUB not in raw.decode()


TOOLS = [{"name": n, "description": n, "input_schema": {"type": "object"}} for n in ("Bash", "WebFetch", "mcp__prod__drop_table")]


@pytest.mark.parametrize("stream", [True, False])
async def test_denied_tools_are_stripped_and_a_call_to_one_comes_back_as_a_refusal(
    fake: FakeAnthropic, hermetic_env: Path, client: aiohttp.ClientSession, stream: bool
) -> None:
    fake.script(ToolUse(name="WebFetch", input={"url": "https://example.org"}, text="Let me fetch it."))
    async with governed(fake.url, hermetic_env, '[tools]\ndeny = ["WebFetch", "mcp__prod__*"]\n') as sc:
        status, _, raw = await post(client, sc, body(stream=stream, tools=TOOLS))
    assert status == 200
    assert [t["name"] for t in fake.requests[0].json()["tools"]] == ["Bash"]
    if stream:
        events = sse.sse_events(raw)
        starts = [d["content_block"]["type"] for e, d in events if e == "content_block_start"]
        texts = "".join(d["delta"].get("text", "") for e, d in events if e == "content_block_delta")
        stop = next(d["delta"]["stop_reason"] for e, d in events if e == "message_delta")
        assert starts == ["text", "text"] and events[-1][0] == "message_stop"
        assert not any(d["delta"]["type"] == "input_json_delta" for e, d in events if e == "content_block_delta")
    else:
        msg = json.loads(raw)
        starts = [b["type"] for b in msg["content"]]
        texts = "".join(b["text"] for b in msg["content"])
        stop = msg["stop_reason"]
    assert starts == ["text", "text"]
    assert texts == "Let me fetch it." + refusal("WebFetch")
    assert stop == "end_turn"


# ---------------------------------------------------------------- the control API


async def test_policy_state_without_a_policy_says_so(fake: FakeAnthropic, hermetic_env: Path, client: aiohttp.ClientSession) -> None:
    async with governed(fake.url, hermetic_env, "") as sc:
        state = await policy_state(client, sc)
        raw = json.dumps(body(stream=False), separators=(",", " : ")).encode()
        async with client.post(sc.url + "/v1/messages", data=raw, headers={"x-api-key": "k"}) as resp:
            assert resp.status == 200
    assert state["configured"] is False and state["policy"]["version"] == 0
    assert fake.requests[0].body == raw  # nothing parsed, nothing re-encoded


async def test_policy_state_shows_budgets_limits_and_in_flight(hermetic_env: Path, client: aiohttp.ClientSession) -> None:
    sidecar_tz = "Europe/Berlin"
    policy = f'[usage]\ntimezone = "{sidecar_tz}"\n[budget]\ndaily_usd = 25\nmonthly_usd = 400\n[limits]\nrequests_per_minute = 120\nmax_concurrent = 8\n'
    async with HeldUpstream({"input_tokens": 10, "output_tokens": 5}) as up, governed(up.url, hermetic_env, policy) as sc:
        pending = asyncio.ensure_future(post(client, sc, body()))
        await up.wait_received(1)
        state = await policy_state(client, sc)
        up.released.set()
        await pending
    assert state["configured"] is True and state["timezone"] == sidecar_tz
    day, month = state["budgets"]
    assert (day["period"], day["limit_usd"], day["in_flight"], day["thresholds"]) == ("day", 25.0, 1, [0.8, 0.95])
    assert day["reserved_usd"] > 0 and day["spent_usd"] == 0.0
    assert datetime.fromisoformat(day["resets_at"]) == next_local_midnight(ZoneInfo(sidecar_tz))
    assert (month["period"], month["limit_usd"]) == ("month", 400.0)
    limits = state["limits"]
    assert (limits["requests_per_minute"], limits["max_concurrent"], limits["in_flight"]) == (120, 8, 1)
    assert limits["input_tokens_per_minute"] is None and limits["output_tokens_per_minute"] is None


async def test_policy_endpoint_needs_the_local_token(fake: FakeAnthropic, hermetic_env: Path, client: aiohttp.ClientSession) -> None:
    async with governed(fake.url, hermetic_env, "[budget]\ndaily_usd = 1\n") as sc:
        async with client.get(sc.url + "/sidecar/v1/policy") as resp:
            assert resp.status == 401
