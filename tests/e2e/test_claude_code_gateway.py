"""End to end, Claude Code's gateway protocol with the real CLI (the pinned 2.1.197, through
ANTHROPIC_BASE_URL): a denied model and a guardrail block each end `claude -p` with the
sidecar's message and no retry, and a budget past 75% reaches the client as the unified
headers (what a gateway-signed-in client turns into its usage notice)."""

from __future__ import annotations

import json

import pytest

from sidecar.testing.fake_anthropic import Text
from sidecar.testing.harness import anthropic_config
from sidecar.testing.recorder import TcpRecorder
from tests.e2e.helpers import (
    Setup,
    claude_result,
    posts,
    run_claude,
    settled_ledger_rows,
    sidecar_port,
    start_sidecar,
)

pytestmark = pytest.mark.e2e
GITHUB_TOKEN = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"


def configure(s: Setup, policy: str) -> None:
    (s.sidecar_home / "config.toml").write_text(anthropic_config(s.fake.url, policy))


async def refused_once(s: Setup, prompt: str) -> tuple[dict[str, object], dict[str, object], object]:
    """Run `claude -p prompt` through a recorder; Claude Code's result, the one refusal's body
    and the refusal itself (asserting that Claude Code asked exactly once)."""
    cc_env = await start_sidecar(s)
    async with TcpRecorder(sidecar_port(cc_env)) as recorder:
        cc_env["ANTHROPIC_BASE_URL"] = f"http://127.0.0.1:{recorder.port}"
        done = await run_claude(s, cc_env, prompt)
    result = claude_result(done)
    assert done.rc == 1 and result["is_error"] is True, done.describe()
    exchanges = [(req, resp) for req, resp in recorder.exchanges() if req.method == "POST"]
    assert len(exchanges) == 1, [(q.target, r.status) for q, r in exchanges]  # no retry, no fallback model
    refusal = exchanges[0][1]
    return result, json.loads(refusal.body), refusal


async def test_a_denied_model_ends_with_the_sidecars_message_and_no_retry(setup: Setup) -> None:
    s = setup
    configure(s, '[policy]\nmodels = ["claude-sonnet-*"]\n')
    result, body, refusal = await refused_once(s, "Say hello.")
    assert refusal.status == 400 and body["error"]["type"] == "invalid_request_error"  # type: ignore[attr-defined]
    message = "claude-sidecar: the model 'claude-opus-4-8' is not allowed by the policy (allowed: claude-sonnet-*)"
    assert message in str(result["result"]), result
    assert posts(s.fake) == []
    rows = await settled_ledger_rows(s.db_file, 1)
    assert (rows[0]["status"], rows[0]["error_type"]) == (400, "invalid_request_error")


async def test_a_guardrail_block_ends_with_the_sidecars_message_and_no_retry(setup: Setup) -> None:
    s = setup
    configure(s, '[guardrails]\ndetectors = { github_token = "block" }\n')
    result, body, refusal = await refused_once(s, f"Deploy with the token {GITHUB_TOKEN} please.")
    assert refusal.status == 400 and refusal.header("x-should-retry") == "false"  # type: ignore[attr-defined]
    assert body["error"]["type"] == "policy_blocked" and body["request_id"] == refusal.header("x-sidecar-request-id")  # type: ignore[attr-defined, index]
    assert "claude-sidecar: the prompt holds a GitHub token" in str(result["result"]), result
    assert posts(s.fake) == []


async def test_a_budget_past_three_quarters_reaches_claude_code_as_the_unified_warning(setup: Setup) -> None:
    s = setup
    configure(s, "[budget]\ndaily_usd = 1.0\n")
    # The first turn costs $0.80 of the $1.00 budget; the second is answered past 75%.
    s.fake.script(Text("first", usage={"input_tokens": 160_000, "output_tokens": 0}), Text("second"))
    cc_env = await start_sidecar(s)
    async with TcpRecorder(sidecar_port(cc_env)) as recorder:
        cc_env["ANTHROPIC_BASE_URL"] = f"http://127.0.0.1:{recorder.port}"
        first = await run_claude(s, cc_env, "Say first.")
        second = await run_claude(s, cc_env, "Say second.")
    assert claude_result(first)["result"] == "first" and claude_result(second)["result"] == "second"
    answers = [resp for req, resp in recorder.exchanges() if req.method == "POST"]
    assert [r.header("anthropic-ratelimit-unified-status") for r in answers] == ["allowed", "allowed_warning"]
    assert answers[1].header("anthropic-ratelimit-unified-overage-surpassed-threshold") == "0.75"
    assert answers[1].header("anthropic-ratelimit-requests-limit") is None  # the upstream's own are gone
