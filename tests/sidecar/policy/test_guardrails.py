"""Guardrails on a Messages body: which parts are read, block / redact / warn, and
placeholders that stay the same from turn to turn."""

from __future__ import annotations

import copy
import json
from typing import Any

import msgspec

from sidecar.policy.config import CustomGuardrail, GuardrailsConfig
from sidecar.policy.guardrails import Guardrails, rules_for
from sidecar.testing import captures
from sidecar.testing.secret_samples import AWS_ID, GITHUB, JWT, rand

KEY = b"k" * 32


def guard(**kw: Any) -> Guardrails:
    return Guardrails(GuardrailsConfig(**kw), KEY)


def conversation(*user_texts: str) -> dict[str, Any]:
    """A Claude Code-like body: system blocks, tools, and alternating turns."""
    messages: list[dict[str, Any]] = []
    for i, text in enumerate(user_texts):
        if i:
            messages.append({"role": "assistant", "content": [{"type": "text", "text": f"answer {i}"}]})
        messages.append({"role": "user", "content": [{"type": "text", "text": text, "cache_control": {"type": "ephemeral"}}]})
    return {
        "model": "claude-opus-4-8",
        "system": [{"type": "text", "text": "You are Claude Code."}, {"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        "tools": [{"name": "Bash", "description": f"Run a command. Example token: {GITHUB}", "input_schema": {}}],
        "messages": messages,
    }


def test_off_by_default() -> None:
    assert not guard().active
    assert rules_for(GuardrailsConfig()) == []


def test_redact_replaces_only_the_secret_with_a_placeholder() -> None:
    g = guard(secrets="redact")
    body = conversation(f"deploy with AWS_ACCESS_KEY_ID={AWS_ID} please")
    out = g.apply(body)
    text = body["messages"][0]["content"][0]["text"]
    assert out.changed and not out.blocked
    assert text.startswith("deploy with AWS_ACCESS_KEY_ID=[REDACTED:aws_access_key:") and text.endswith("] please")
    assert AWS_ID not in json.dumps(body)
    assert [(f.rule.detector.name, f.where, f.count) for f in out.redacted] == [("aws_access_key", "messages[0].content[0]", 1)]
    # Tool definitions are not prompts: left alone.
    assert GITHUB in body["tools"][0]["description"]


def test_the_same_secret_gets_the_same_placeholder_on_every_turn_and_after_a_restart() -> None:
    first = conversation(f"key {AWS_ID}")
    second = conversation(f"key {AWS_ID}", "and again: " + AWS_ID)
    guard(secrets="redact").apply(first)
    guard(secrets="redact").apply(second)  # a new instance (a restart) with the same key
    assert second["messages"][0] == first["messages"][0]
    placeholder = first["messages"][0]["content"][0]["text"].removeprefix("key ")
    assert second["messages"][2]["content"][0]["text"] == f"and again: {placeholder}"
    # A different secret, or a different key, gives a different placeholder.
    other = conversation("key AKIA" + rand(16, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", "other"))
    guard(secrets="redact").apply(other)
    assert other["messages"][0]["content"][0]["text"] != f"key {placeholder}"
    elsewhere = conversation(f"key {AWS_ID}")
    Guardrails(GuardrailsConfig(secrets="redact"), b"z" * 32).apply(elsewhere)
    assert elsewhere["messages"][0] != first["messages"][0]


def test_redaction_touches_no_other_part_of_the_request() -> None:
    body = conversation("hello", f"token {GITHUB}")
    before = copy.deepcopy(body)
    guard(secrets="redact").apply(body)
    changed = [i for i, (a, b) in enumerate(zip(before["messages"], body["messages"], strict=True)) if a != b]
    assert changed == [2]
    assert body["system"] == before["system"] and body["tools"] == before["tools"]
    assert body["messages"][2]["content"][0]["cache_control"] == {"type": "ephemeral"}


def test_block_refuses_and_changes_nothing() -> None:
    g = guard(secrets="redact", detectors={"github_token": "block"})
    body = conversation(f"{AWS_ID} and {GITHUB}")
    before = copy.deepcopy(body)
    out = g.apply(body)
    assert [(f.rule.detector.name, f.where) for f in out.blocked] == [("github_token", "messages[0].content[0]")]
    assert body == before and not out.changed


def test_warn_reports_but_sends_as_is() -> None:
    body = conversation("mail jane.doe@acme-corp.com")
    before = copy.deepcopy(body)
    out = guard(pii="warn").apply(body)
    assert body == before and not out.changed
    assert [(f.rule.detector.name, f.rule.mode) for f in out.warned] == [("email", "warn")]


def test_every_prompt_part_is_read_and_thinking_is_never_touched() -> None:
    secret = AWS_ID
    body: dict[str, Any] = {
        "system": f"system {secret}",
        "messages": [
            {"role": "user", "content": f"plain {secret}"},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": f"I saw {secret}", "signature": "sig"},
                    {"type": "tool_use", "id": "t1", "name": "Bash", "input": {"command": f"echo {secret}", "env": [{"v": secret}]}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "t1", "content": f"out {secret}"},
                    {"type": "tool_result", "tool_use_id": "t2", "content": [{"type": "text", "text": f"list {secret}"}]},
                    {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": f"doc {secret}"}},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR" + secret}},
                ],
            },
        ],
    }
    out = guard(secrets="redact").apply(body)
    wheres = sorted(f.where for f in out.redacted)
    assert wheres == [
        "messages[0]",
        "messages[1].content[1]",
        "messages[1].content[1]",
        "messages[2].content[0]",
        "messages[2].content[1].content[0]",
        "messages[2].content[2]",
        "system",
    ]
    assert body["messages"][1]["content"][0]["thinking"] == f"I saw {secret}"  # signed: untouched
    assert body["messages"][2]["content"][3]["source"]["data"] == "iVBOR" + secret
    assert secret not in json.dumps(body["messages"][1]["content"][1]["input"])


def test_overlapping_matches_become_one_placeholder() -> None:
    body = conversation(f"Authorization: Bearer {JWT}")
    out = guard(secrets="redact").apply(body)
    text = body["messages"][0]["content"][0]["text"]
    assert text.count("[REDACTED:") == 1 and JWT not in text
    assert len(out.redacted) == 1


def test_a_placeholder_is_not_redacted_again() -> None:
    g = guard(secrets="redact")
    body = conversation(f"postgres://app:Zr8kq2Lw7x@db/prod and {AWS_ID}")
    g.apply(body)
    once = body["messages"][0]["content"][0]["text"]
    again = conversation(once)
    assert not g.apply(again).changed


def test_custom_rules_run_in_their_own_mode() -> None:
    g = guard(custom=(CustomGuardrail("ticket", r"ACME-\d{6}", "redact"), CustomGuardrail("codename", r"(?i)project\s+falcon", "block")))
    body = conversation("see ACME-123456 and ACME-12345")
    g.apply(body)
    assert body["messages"][0]["content"][0]["text"].count("[REDACTED:ticket:") == 1
    assert "ACME-12345" in body["messages"][0]["content"][0]["text"]
    blocked = g.apply(conversation("status of Project  Falcon?"))
    assert [f.rule.detector.name for f in blocked.blocked] == ["codename"]


def test_a_block_rule_wins_over_an_overlapping_redact_rule() -> None:
    g = guard(secrets="redact", custom=(CustomGuardrail("aws-any", "AKIA[A-Z0-9]+", "block"),))
    out = g.apply(conversation(f"x {AWS_ID}"))
    assert [f.rule.detector.name for f in out.blocked] == ["aws-any"]


def test_claude_code_turns_pass_unchanged_and_a_repeat_scan_is_memoised() -> None:
    body = msgspec.json.decode(captures.load("main-turn-sonnet").body)
    g = guard(secrets="redact", pii="redact")
    before = copy.deepcopy(body)
    out = g.apply(body)
    assert not (out.changed or out.blocked or out.warned or out.redacted)
    assert body == before
    # Every long string is memoised: the next turn's scan of it is a dict lookup.
    assert all(text in g.scanner._memo for text in _long_strings(body))
    hit = "x" * 64 + f" {AWS_ID}"
    first = g.scanner.scan(hit)
    assert len(first) == 1 and g.scanner.scan(str(hit + " ")[:-1]) is first


def _long_strings(body: dict[str, Any]) -> list[str]:
    out = [b["text"] for b in body["system"] if len(b["text"]) >= 64]
    for m in body["messages"]:
        if isinstance(m["content"], str):
            out.append(m["content"])
        else:
            out.extend(b["text"] for b in m["content"] if b.get("type") == "text" and len(b["text"]) >= 64)
    assert len(out) >= 3
    return out
