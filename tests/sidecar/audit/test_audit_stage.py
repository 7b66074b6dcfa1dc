"""The audit stage in a real sidecar: one chained entry per request with its decisions,
and bodies only when content logging is on."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import aiohttp

from sidecar.audit.verify import entries_in_db
from sidecar.ledger.store import open_db
from sidecar.testing.audit import audit_entries
from sidecar.testing.fake_anthropic import FakeAnthropic, Text, ToolUse
from sidecar.testing.governed import body, governed, post
from sidecar.testing.secret_samples import AWS_ID

POLICY = """
[budget]
daily_usd = 1.0
[guardrails]
secrets = "redact"
[tools]
deny = ["WebFetch"]
"""
GATE_STAGES = {"model", "budget", "limits", "tools", "guardrail"}
TOOLS = [{"name": "Bash", "input_schema": {}}, {"name": "WebFetch", "input_schema": {}}]


def whole_table(home: Path) -> str:
    conn = sqlite3.connect(home / "data" / "sidecar.db")
    try:
        return json.dumps(conn.execute("SELECT * FROM audit").fetchall())
    finally:
        conn.close()


async def test_every_request_and_decision_is_chained_without_bodies(
    fake: FakeAnthropic, hermetic_env: Path, client: aiohttp.ClientSession
) -> None:
    secret_prompt = f"deploy with {AWS_ID} then tell me a story about the quiet lighthouse"
    fake.script(ToolUse(name="WebFetch", input={"url": "https://x.org"}, usage={"input_tokens": 250_000}))
    async with governed(fake.url, hermetic_env, POLICY) as sc:
        ok = await post(client, sc, body(secret_prompt, tools=TOOLS))
        refused = await post(client, sc, body("another"))
        counted = await post(client, sc, {"model": "claude-opus-4-8", "messages": [{"role": "user", "content": "x"}]}, "/v1/messages/count_tokens")
    assert (ok[0], refused[0], counted[0]) == (200, 429, 200)
    entries = audit_entries(hermetic_env)
    assert [e["kind"] for e in entries] == ["start", "request", "request", "request", "stop"]
    start, first, second, third, _ = entries
    assert start["policy"]["version"] == 0 and len(start["policy"]["digest"]) == 64 and start["log_content"] is False

    assert first["request_id"] == ok[1]["x-sidecar-request-id"]
    assert (first["status"], first["requested_model"], first["provider"], first["input_tokens"]) == (200, "claude-opus-4-8", "anthropic", 250_000)
    assert first["cost_usd"] > 1.0
    mine = [d for d in first["decisions"] if d["stage"] in GATE_STAGES]  # the cache and router add theirs
    assert [(d["stage"], d["action"]) for d in mine] == [("budget", "allow"), ("tools", "strip"), ("guardrail", "redact"), ("tools", "deny")]
    assert mine[2]["reason"] == "aws_access_key in messages[0]"
    assert mine[3]["reason"] == "refused 1 call(s) of denied tools in the response: WebFetch"

    assert (second["status"], second["outcome"], second["error_type"]) == (429, "rejected", "billing_error")
    [deny] = [d for d in second["decisions"] if d["stage"] in GATE_STAGES]
    assert (deny["stage"], deny["action"]) == ("budget", "deny") and deny["reason"].startswith("the daily budget of $1.00 is used up")
    assert third["endpoint"] == "/v1/messages/count_tokens"
    assert [d for d in third["decisions"] if d["stage"] in GATE_STAGES] == []

    table = whole_table(hermetic_env)
    assert "lighthouse" not in table and AWS_ID not in table and "content" not in first


async def test_content_logging_keeps_the_prompt_as_sent_and_the_answer_as_received(
    fake: FakeAnthropic, hermetic_env: Path, client: aiohttp.ClientSession
) -> None:
    fake.script(Text("The lighthouse keeper waved."), Text("Plain answer."))
    policy = POLICY + "[policy]\nlog_content = true\n"
    async with governed(fake.url, hermetic_env, policy) as sc:
        await post(client, sc, body(f"story please, key {AWS_ID}", stream=True))
        await post(client, sc, body("again", stream=False))
    _, streamed, whole, _ = audit_entries(hermetic_env)
    request = streamed["content"]["request"]
    assert request["messages"][0]["content"].startswith("story please, key [REDACTED:aws_access_key:")
    assert request == fake.requests[0].json()  # what left the sidecar, not what the client sent
    response = streamed["content"]["response"]
    assert response["content"] == [{"type": "text", "text": "The lighthouse keeper waved."}]
    assert response["stop_reason"] == "end_turn" and response["usage"]["output_tokens"] == 4
    assert whole["content"]["response"]["content"] == [{"type": "text", "text": "Plain answer."}]
    assert AWS_ID not in whole_table(hermetic_env)


async def test_the_audit_log_can_be_turned_off(fake: FakeAnthropic, hermetic_env: Path, client: aiohttp.ClientSession) -> None:
    async with governed(fake.url, hermetic_env, "[policy]\naudit = false\n") as sc:
        assert (await post(client, sc, body()))[0] == 200
    db = open_db(hermetic_env / "data" / "sidecar.db")
    try:
        assert list(entries_in_db(db)) == []
    finally:
        db.conn.close()
