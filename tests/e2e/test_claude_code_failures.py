"""End to end, failure paths: what the real Claude Code CLI does when the upstream misbehaves.

Each test runs Claude Code 2.1.197 (`-p --output-format json`) through the sidecar daemon to
the in-process fake upstream and checks three things: what Claude Code printed, what the
fake received (how many requests, which kind, when), and the sidecar's ledger rows.

The expected client behaviour is the one measured in
/work/shared/research/claude-code-wire-protocol.md, sections 7 (errors and retries) and 8
(broken streams). No CLAUDE_CODE_MAX_RETRIES is set: every case ends well within Claude
Code's default of 10 retries (the 529 case ends after 3 attempts by its own rule).
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from sidecar.testing import anthropic_sse as sse
from sidecar.testing.fake_anthropic import Cut, Error, Text
from sidecar.testing.recorder import TcpRecorder
from tests.e2e.helpers import (
    MODEL,
    Done,
    Setup,
    claude_result,
    opus_cost,
    posts,
    run_claude,
    settled_ledger_rows,
    sidecar_port,
    start_sidecar,
)

pytestmark = pytest.mark.e2e

PROMPT = "Say hello."
CLOSED_MID_RESPONSE = (
    "API Error: Connection closed mid-response. The response above may be incomplete."
)
# Claude Code's debug log (`--debug api`, ~/.claude/debug/<session>.txt) names the path it took.
STREAM_STARTED = "Stream started - received first chunk"
KEPT_THE_BLOCK = "Stream connection closed (ECONNRESET) after 1 block(s) yielded"
FELL_BACK = "Error streaming, falling back to non-streaming mode"


def debug_log(s: Setup, session_id: str) -> str:
    return (s.claude_home / ".claude" / "debug" / f"{session_id}.txt").read_text()


def expect_only_messages(s: Setup, count: int) -> list[dict[str, Any]]:
    """The bodies of the fake's POST /v1/messages; there must be `count`, and nothing else
    (bar Claude Code's HEAD / preconnect)."""
    found = posts(s.fake)
    seen = [(r.method, r.path) for r in s.fake.requests]
    assert len(found) == count, seen
    assert all(r.method == "HEAD" or (r.method, r.path) == ("POST", "/v1/messages")
               for r in s.fake.requests), seen  # fmt: skip
    bodies = [r.json() for r in found]
    assert all(b["model"] == MODEL for b in bodies), [b["model"] for b in bodies]
    return bodies


def gaps(s: Setup) -> list[float]:
    """Seconds between the arrivals of consecutive POST /v1/messages at the fake."""
    times = [r.received_at for r in posts(s.fake)]
    return [b - a for a, b in itertools.pairwise(times)]


def expect_session(rows: list[dict[str, Any]], result: dict[str, Any], done: Done) -> None:
    session_id = result["session_id"]
    assert all(row["session_id"] == session_id for row in rows), (rows, done.describe())


def expect_ok_row(row: dict[str, Any], body: bytes, reply: Text, *, stream: bool) -> None:
    """A ledger row for a whole answer of `reply`, metered from the fake's usage."""
    assert (row["status"], row["outcome"], row["stop_reason"]) == (200, "ok", "end_turn"), row
    assert row["stream"] == int(stream), row
    assert row["error_type"] is None, row
    input_tokens, output_tokens = sse.estimate_tokens(body), reply.render().output_tokens
    assert (row["input_tokens"], row["output_tokens"]) == (input_tokens, output_tokens), row
    assert row["cost_usd"] == pytest.approx(opus_cost(input_tokens, output_tokens)), row


async def test_cut_before_a_block_completes_falls_back_to_non_streaming(setup: Setup) -> None:
    """Upstream resets the stream after the first text delta: the sidecar resets Claude Code's
    connection, Claude Code retries the same body without streaming, and that answer wins."""
    s = setup
    partial = Text("Partial streamed words that never finish.")
    answer = Text("The answer from the non-streaming retry.")
    # message_start, content_block_start, ping, the first text_delta; then a TCP reset.
    s.fake.script(Cut(after_events=4, reply=partial), answer)
    cc_env = await start_sidecar(s)

    done = await run_claude(s, cc_env, PROMPT, "--debug", "api")

    assert done.rc == 0, done.describe()
    result = claude_result(done)
    assert result["is_error"] is False, result
    # Only the retry's text: the partial delta is neither kept nor shown twice.
    assert result["result"] == answer.text, result
    # Claude Code had the start of the stream, then fell back on the reset.
    log = debug_log(s, result["session_id"])
    assert STREAM_STARTED in log and FELL_BACK in log, log

    streamed, retried = expect_only_messages(s, 2)
    assert s.fake.pending == 0
    assert streamed["stream"] is True, streamed
    assert "stream" not in retried, retried
    assert retried == {k: v for k, v in streamed.items() if k != "stream"}

    rows = await settled_ledger_rows(s.db_file, 2)
    expect_session(rows, result, done)
    first, second = rows
    assert (first["stream"], first["status"], first["outcome"]) == (1, 200, "aborted"), first
    assert first["stop_reason"] is None, first
    expect_ok_row(second, posts(s.fake)[1].body, answer, stream=False)


@pytest.mark.parametrize(
    "pause", [0.0, 0.1], ids=["end-right-after-the-block", "end-0.1s-after-the-block"]
)
async def test_clean_end_after_a_block_without_message_stop_is_never_success(
    setup: Setup, pause: float
) -> None:
    """Upstream ends the stream cleanly after content_block_stop, without message_delta and
    message_stop. Passed on as is, Claude Code 2.1.197 would take the text as the complete
    answer (rc 0, no retry; research section 8, e25). The sidecar resets the connection
    instead, so Claude Code never takes the truncated text for an answer.

    Claude Code then reports "Connection closed mid-response", rc 1, and does not retry.
    That holds only because the sidecar lets the bytes it already sent be read before the
    reset (ABORT_GRACE_SECONDS): a reset at once made Claude Code lose the block in about a
    third of the runs and silently re-run the whole request instead.
    """
    s = setup
    truncated = Text("A truncated answer that looks complete.")
    content = truncated.render().content  # content_block_start, ping, deltas, content_block_stop
    retry = Text("The answer from Claude Code's retry.")
    s.fake.script(
        Cut(after_events=1 + len(content), clean_end=True, end_delay=pause, reply=truncated), retry
    )
    cc_env = await start_sidecar(s)

    done = await run_claude(s, cc_env, PROMPT, "--debug", "api")

    result = claude_result(done)
    assert truncated.text not in done.out, done.describe()
    log = debug_log(s, result["session_id"])
    assert done.rc == 1, done.describe()
    assert result["is_error"] is True, result
    assert result["result"] == CLOSED_MID_RESPONSE, result
    assert KEPT_THE_BLOCK in log, log
    # No retry, streaming or not: after a completed block a broken stream is final.
    (body,) = expect_only_messages(s, 1)
    assert body["stream"] is True, body
    assert s.fake.pending == 1

    rows = await settled_ledger_rows(s.db_file, 1)
    expect_session(rows, result, done)
    row = rows[0]
    assert (row["stream"], row["status"], row["outcome"]) == (1, 200, "aborted"), row
    assert row["stop_reason"] is None, row
    # The sidecar sent the whole content block on before the reset.
    assert row["response_bytes"] >= sum(map(len, content)), row


async def test_429_with_retry_after_is_passed_through_and_retried(setup: Setup) -> None:
    """Two 429s with `retry-after: 1`, then an answer: the sidecar hands each 429 to Claude
    Code as is (no retry of its own), and Claude Code waits the second it was told to."""
    s = setup
    answer = Text("Answered after two rate limits.")
    limited = Error(429, headers={"retry-after": "1"})
    s.fake.script(limited, limited, answer)
    cc_env = await start_sidecar(s)

    # A recorder between Claude Code and the sidecar shows the 429s as Claude Code got them.
    async with TcpRecorder(sidecar_port(cc_env)) as recorder:
        cc_env["ANTHROPIC_BASE_URL"] = f"http://127.0.0.1:{recorder.port}"
        done = await run_claude(s, cc_env, PROMPT)

    assert done.rc == 0, done.describe()
    result = claude_result(done)
    assert result["is_error"] is False, result
    assert result["result"] == answer.text, result

    bodies = expect_only_messages(s, 3)
    assert all(b == bodies[0] for b in bodies), "Claude Code retried with a different body"
    assert s.fake.pending == 0
    # Claude Code's own backoff would be 0.5-0.625 s before the first retry; 1 s or more
    # means it read the retry-after header (its delay is max(retry-after, backoff)).
    waits = gaps(s)
    assert len(waits) == 2 and all(0.95 <= w < 3.0 for w in waits), waits

    rows = await settled_ledger_rows(s.db_file, 3)
    expect_session(rows, result, done)
    for row in rows[:2]:
        assert (row["status"], row["outcome"]) == (429, "upstream_error"), row
        assert row["error_type"] == "rate_limit_error", row
        assert (row["input_tokens"], row["output_tokens"], row["cost_usd"]) == (0, 0, 0.0), row
    expect_ok_row(rows[2], posts(s.fake)[2].body, answer, stream=True)

    # What Claude Code received for each 429: the upstream's status, retry-after, request-id
    # and error body, untouched.
    exchanges = [(req, resp) for req, resp in recorder.exchanges() if req.method == "POST"]
    assert [resp.status for _, resp in exchanges] == [429, 429, 200], exchanges
    for (_, resp), row in zip(exchanges[:2], rows[:2], strict=True):
        assert resp.header("retry-after") == "1", resp.headers
        request_id = resp.header("request-id")
        assert request_id is not None and request_id == row["upstream_request_id"], resp.headers
        message = sse.ERROR_MESSAGES["rate_limit_error"]
        assert resp.body == sse.encode_json(
            sse.error_body("rate_limit_error", message, request_id)
        ), resp.body


async def test_repeated_529_gives_up_after_three_attempts(setup: Setup) -> None:
    """529 on every request, for a claude-* model: Claude Code stops after 3 attempts with its
    "Repeated 529 Overloaded errors" message; each 529 reached it and the ledger."""
    s = setup
    s.fake.default = Error(529)
    cc_env = await start_sidecar(s)

    done = await run_claude(s, cc_env, PROMPT)

    result = claude_result(done)
    assert done.rc == 1, done.describe()
    assert result["is_error"] is True, result
    assert result["result"].startswith("API Error: Repeated 529 Overloaded errors."), result
    # The message names the gateway Claude Code was talking to: the sidecar.
    assert cc_env["ANTHROPIC_BASE_URL"].removeprefix("http://") in result["result"], result

    expect_only_messages(s, 3)
    # Claude Code's backoff (~0.5 s, then ~1 s), with no retry-after to stretch it.
    waits = gaps(s)
    assert len(waits) == 2 and all(0.4 <= w < 3.0 for w in waits), waits

    rows = await settled_ledger_rows(s.db_file, 3)
    expect_session(rows, result, done)
    for row in rows:
        assert (row["stream"], row["status"], row["outcome"]) == (1, 529, "upstream_error"), row
        assert row["error_type"] == "overloaded_error", row
        assert row["cost_usd"] == 0.0, row
    assert len({row["upstream_request_id"] for row in rows}) == 3, rows
