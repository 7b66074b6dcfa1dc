"""End to end: the real Claude Code CLI talks to a fake Anthropic upstream through the sidecar.

The sidecar runs as its own daemon, started and stopped through the real CLI
(`claude-sidecar start|env|run|usage|stop`). A `TcpRecorder` between Claude Code and the
sidecar records the exact bytes Claude Code sent, so the test can check that the upstream
received the same bodies and headers, and that the ledger metered every request.

Claude Code comes from CLAUDE_SIDECAR_CLAUDE_BIN (exported by the repo's test script, which
installs it under .cache/npm); without it these tests fail rather than skip. Shared helpers
are in tests/e2e/helpers.py, the `setup` fixture in tests/e2e/conftest.py.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import time

import pytest

from sidecar.testing import anthropic_sse as sse
from sidecar.testing.fake_anthropic import Text, ToolUse
from sidecar.testing.recorder import RawRequest, TcpRecorder
from tests.e2e.helpers import (
    API_KEY,
    CLAUDE_TIMEOUT,
    MODEL,
    Setup,
    block_text,
    claude_bin,
    claude_result,
    forwarded_headers,
    ledger_rows,
    opus_cost,
    posts,
    run,
    sidecar_cli,
    sidecar_port,
    start_sidecar,
    tool_results,
)

pytestmark = pytest.mark.e2e


# ---------------------------------------------------------------- tests


async def test_tool_round_trip_through_sidecar(setup: Setup) -> None:
    """Claude Code -> recorder -> sidecar daemon -> fake, with one Bash tool round trip."""
    claude = claude_bin()
    s = setup
    marker = f"sidecar-e2e-{secrets.token_hex(6)}"
    tool_id = sse.new_id("toolu_01")
    tool = ToolUse(
        name="Bash",
        input={"command": f"echo {marker}", "description": "Print the e2e marker"},
        id=tool_id,
    )
    answer = Text(f"The command printed {marker}.")
    s.fake.script(tool, answer)

    cc_env = await start_sidecar(s)
    async with TcpRecorder(sidecar_port(cc_env)) as recorder:
        cc_env["ANTHROPIC_BASE_URL"] = f"http://127.0.0.1:{recorder.port}"
        t0 = time.monotonic()
        done = await run(
            claude,
            "-p", f"Run `echo {marker}` with the Bash tool and tell me what it printed.",
            "--output-format", "json",
            "--allowedTools", "Bash",
            env=s.claude_env(**cc_env),
            cwd=s.workdir,
            time_limit=CLAUDE_TIMEOUT,
        )  # fmt: skip
        elapsed = time.monotonic() - t0
    assert done.rc == 0, f"Claude Code failed after {elapsed:.1f} s: {done.describe()}"

    # Claude Code's answer is the fake's final text.
    result = claude_result(done)
    assert result["is_error"] is False, result
    assert result["subtype"] == "success", result
    assert answer.text in result["result"], result
    session_id = result["session_id"]

    # The upstream saw exactly the two model calls, and the second carries the tool's output.
    calls = posts(s.fake)
    others = [r for r in s.fake.requests if r not in calls and r.method != "HEAD"]
    assert len(calls) == 2, [(r.method, r.path) for r in s.fake.requests]
    assert not others, [(r.method, r.path) for r in others]
    assert s.fake.pending == 0
    first, second = (p.json() for p in calls)
    assert first["model"] == second["model"] == MODEL
    assert not tool_results(first)
    results = tool_results(second)
    assert [r["tool_use_id"] for r in results] == [tool_id], results
    assert marker in block_text(results[0]["content"]), results[0]
    assert not results[0].get("is_error"), results[0]

    # Byte-identical bodies and identical headers, against what Claude Code put on the wire.
    sent: list[RawRequest] = [
        r for r in recorder.requests() if r.method == "POST" and r.target.startswith("/v1/messages")
    ]
    assert len(sent) == 2, [(r.method, r.target) for r in recorder.requests()]
    for received in calls:
        matches = [r for r in sent if r.body == received.body]
        assert len(matches) == 1, "the upstream got a body Claude Code did not send byte for byte"
        original = matches[0]
        assert original.target == received.path + (
            "?" + received.query_string if received.query_string else ""
        )
        want = forwarded_headers(original.headers)
        assert ("x-api-key", API_KEY) in want, want
        assert ("x-claude-code-session-id", session_id) in want, want
        assert forwarded_headers(received.headers) == want

    # The ledger: one row per request, metered from the fake's usage and priced as Opus.
    expected = [
        (sse.estimate_tokens(calls[0].body), tool.render().output_tokens, "tool_use"),
        (sse.estimate_tokens(calls[1].body), answer.render().output_tokens, "end_turn"),
    ]
    rows = await ledger_rows(s.db_file, 2)
    assert len(rows) == 2, rows
    for row, (input_tokens, output_tokens, stop_reason) in zip(rows, expected, strict=True):
        assert row["session_id"] == session_id, row
        assert row["requested_model"] == MODEL, row
        assert row["upstream_model"] in (None, MODEL), row
        assert row["agent_id"] is None, row
        assert row["provider"] == "anthropic", row
        assert row["endpoint"] == "/v1/messages", row
        assert row["stream"] == 1, row
        assert row["status"] == 200, row
        assert row["outcome"] == "ok", row
        assert row["stop_reason"] == stop_reason, row
        assert (row["input_tokens"], row["output_tokens"]) == (input_tokens, output_tokens), row
        assert (row["cache_read_tokens"] or 0, row["cache_write_tokens"] or 0) == (0, 0), row
        assert row["cost_usd"] > 0, row
        assert row["cost_usd"] == pytest.approx(opus_cost(input_tokens, output_tokens)), row

    total_in = sum(e[0] for e in expected)
    total_out = sum(e[1] for e in expected)
    total_cost = opus_cost(total_in, total_out)
    report = await sidecar_cli(s.sidecar_env, "usage", "session", "--json")
    assert report.rc == 0, report.describe()
    sessions = json.loads(report.out)
    assert len(sessions) == 1, sessions
    assert sessions[0]["key"] == session_id
    assert sessions[0]["requests"] == 2
    assert (sessions[0]["input_tokens"], sessions[0]["output_tokens"]) == (total_in, total_out)
    assert sessions[0]["cost_usd"] == pytest.approx(total_cost)

    # Claude Code's own accounting (summed over both turns, priced from its own table) agrees.
    usage = result["usage"]
    assert (usage["input_tokens"], usage["output_tokens"]) == (total_in, total_out), usage
    assert (usage["cache_read_input_tokens"], usage["cache_creation_input_tokens"]) == (0, 0)
    assert result["num_turns"] == 2, result
    assert result["total_cost_usd"] == pytest.approx(total_cost, rel=1e-3), result


async def test_run_execs_claude_against_sidecar(setup: Setup) -> None:
    """`claude-sidecar run -- claude -p ...` starts the daemon and points Claude Code at it."""
    claude = claude_bin()
    s = setup
    answer = Text("Hello through claude-sidecar run.")
    s.fake.script(answer)
    # `run` execs Claude Code with its own environment plus the sidecar's, so start from the
    # clean Claude Code env and add only what the sidecar CLI needs to find its home.
    sidecar_vars = {k: v for k, v in s.sidecar_env.items() if k.startswith("CLAUDE_SIDECAR_")}
    keyring_vars = {k: v for k, v in os.environ.items() if "KEYRING" in k}
    env = {**s.claude_env(), **sidecar_vars, **keyring_vars}
    done = await run(
        sys.executable, "-m", "sidecar", "run", "--",
        claude, "-p", "Say hello.", "--output-format", "json",
        env=env,
        cwd=s.workdir,
        time_limit=CLAUDE_TIMEOUT,
    )  # fmt: skip
    assert done.rc == 0, done.describe()
    assert "claude-sidecar started at" in done.err, done.err
    result = claude_result(done)
    assert result["is_error"] is False, result
    assert result["result"] == answer.text, result
    session_id = result["session_id"]

    calls = posts(s.fake)
    assert len(calls) == 1, [(r.method, r.path) for r in s.fake.requests]
    assert calls[0].header("x-claude-code-session-id") == session_id
    assert calls[0].header("x-api-key") == API_KEY

    rows = await ledger_rows(s.db_file, 1)
    assert len(rows) == 1, rows
    row = rows[0]
    assert row["session_id"] == session_id, row
    assert (row["status"], row["outcome"], row["stop_reason"]) == (200, "ok", "end_turn"), row
    input_tokens = sse.estimate_tokens(calls[0].body)
    output_tokens = answer.render().output_tokens
    assert (row["input_tokens"], row["output_tokens"]) == (input_tokens, output_tokens), row
    assert row["cost_usd"] == pytest.approx(opus_cost(input_tokens, output_tokens)), row
