"""End to end, governance: what the real Claude Code CLI does when the sidecar's policy
refuses a request.

- A budget exhausted mid-session: the sidecar answers 429 with `retry-after` until the reset
  (over 60 s), so Claude Code stops at once and shows the sidecar's message; the requests
  are counted, so a retry storm would show.
- A rate limit with a short `retry-after`: Claude Code waits that long and succeeds.

Claude Code's reactions are the ones measured in
/work/shared/research/claude-code-wire-protocol.md, section 7 (a computed delay over 60 s
makes it give up; otherwise it waits max(retry-after, backoff)).
"""

from __future__ import annotations

import json

import aiohttp
import pytest

from sidecar.testing.fake_anthropic import Text, ToolUse
from sidecar.testing.harness import anthropic_config
from sidecar.testing.recorder import TcpRecorder
from tests.e2e.helpers import (
    MODEL,
    Setup,
    claude_result,
    posts,
    run_claude,
    settled_ledger_rows,
    sidecar_port,
    start_sidecar,
)

pytestmark = pytest.mark.e2e


def configure(s: Setup, policy: str) -> None:
    """The sidecar's config: the fake upstream and `policy`."""
    (s.sidecar_home / "config.toml").write_text(anthropic_config(s.fake.url, policy))


async def test_an_exhausted_budget_stops_claude_code_at_once_with_the_sidecars_message(setup: Setup) -> None:
    s = setup
    configure(s, '[usage]\ntimezone = "Asia/Kolkata"\n[budget]\ndaily_usd = 1.0\n')
    # The first turn calls a tool and costs $1.25 (250,000 input tokens of Opus at $5/M):
    # the budget runs out in the middle of the session.
    s.fake.script(
        ToolUse(name="Bash", input={"command": "echo governed", "description": "Print a word"}, usage={"input_tokens": 250_000}),
        Text("This answer must never be asked for."),
    )
    cc_env = await start_sidecar(s)
    async with TcpRecorder(sidecar_port(cc_env)) as recorder:
        cc_env["ANTHROPIC_BASE_URL"] = f"http://127.0.0.1:{recorder.port}"
        done = await run_claude(s, cc_env, "Run `echo governed` with the Bash tool.", "--allowedTools", "Bash")

    result = claude_result(done)
    assert done.rc == 1 and result["is_error"] is True, done.describe()
    message = "claude-sidecar: the daily budget of $1.00 is used up ($1.25 spent today); it resets at "
    assert message in result["result"], result
    assert "raise budget.daily_usd in the sidecar's config." in result["result"], result
    assert "Asia/Kolkata" in result["result"], result

    # No retry storm: Claude Code sent two model calls in all, the second one refused.
    exchanges = [(req, resp) for req, resp in recorder.exchanges() if req.method == "POST"]
    assert [resp.status for _, resp in exchanges] == [200, 429], exchanges
    refusal = exchanges[1][1]
    assert int(refusal.header("retry-after") or 0) > 60 and refusal.header("x-should-retry") == "false"
    assert json.loads(refusal.body)["error"]["type"] == "billing_error"
    assert refusal.header("anthropic-ratelimit-unified-status") == "rejected"
    assert len(posts(s.fake)) == 1  # nothing after the budget ran out reached the upstream
    rows = await settled_ledger_rows(s.db_file, 2)
    assert [(r["status"], r["outcome"]) for r in rows] == [(200, "ok"), (429, "rejected")]
    assert rows[0]["cost_usd"] == pytest.approx(1.25, abs=0.01)


async def test_a_short_rate_limit_makes_claude_code_wait_and_then_succeed(setup: Setup) -> None:
    s = setup
    # 60,000 input tokens a minute refill at 1,000 a second. A first request uses 59,000,
    # so Claude Code's ~19,000-token turn has to wait some seconds for the bucket.
    configure(s, "[limits]\ninput_tokens_per_minute = 60000\n")
    answer = Text("Answered once the bucket had refilled.")
    s.fake.script(Text("drain", usage={"input_tokens": 59_000}), answer)
    cc_env = await start_sidecar(s)
    async with aiohttp.ClientSession() as client:
        drain = {"model": MODEL, "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}
        async with client.post(cc_env["ANTHROPIC_BASE_URL"] + "/v1/messages", json=drain, headers={"x-api-key": "sk-ant-test"}) as resp:
            assert resp.status == 200, await resp.text()

    async with TcpRecorder(sidecar_port(cc_env)) as recorder:
        cc_env["ANTHROPIC_BASE_URL"] = f"http://127.0.0.1:{recorder.port}"
        done = await run_claude(s, cc_env, "Say hello.")

    assert done.rc == 0, done.describe()
    result = claude_result(done)
    assert result["is_error"] is False and result["result"] == answer.text, result
    exchanges = [(req, resp) for req, resp in recorder.exchanges() if req.method == "POST"]
    assert [resp.status for _, resp in exchanges] == [429, 200], exchanges
    limited = exchanges[0][1]
    wait = int(limited.header("retry-after") or 0)
    assert 1 <= wait <= 60 and limited.header("x-should-retry") is None
    message = json.loads(limited.body)["error"]["message"]
    assert message.startswith("claude-sidecar: input_tokens_per_minute = 60,000: this request (") and message.endswith(f"fits again in {wait} s")
    # One refusal and one retry: had Claude Code come back before the wait, it would have
    # been refused again.
    assert exchanges[0][0].body == exchanges[1][0].body
    assert len(posts(s.fake)) == 2
    rows = await settled_ledger_rows(s.db_file, 3)
    assert [(r["status"], r["outcome"], r["error_type"]) for r in rows] == [
        (200, "ok", None), (429, "rejected", "rate_limit_error"), (200, "ok", None),
    ]  # fmt: skip
