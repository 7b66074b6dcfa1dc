"""Foreign thinking blocks are dropped before an Anthropic upstream; Anthropic's stay byte for byte."""

from __future__ import annotations

import json

import aiohttp
import msgspec

from sidecar.protocol.foreign import scrub
from sidecar.testing.fake_anthropic import FakeAnthropic
from sidecar.testing.harness import InProcessSidecar


def conversation(*assistant: dict[str, object]) -> dict[str, object]:
    return {
        "model": "claude-opus-4-8",
        "max_tokens": 64,
        "messages": [
            {"role": "user", "content": "list files"},
            {"role": "assistant", "content": list(assistant)},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "a.py"}]},
        ],
    }


TOOL = {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {"command": "ls"}}
ANTHROPIC_THINKING = {"type": "thinking", "thinking": "hmm", "signature": "EqQBCkYIBhgCIkD0"}


def test_anthropic_signatures_are_left_alone_without_decoding() -> None:
    body = msgspec.json.encode(conversation(ANTHROPIC_THINKING, TOOL))
    assert scrub(body) is None


def test_openai_and_gemini_thinking_are_dropped() -> None:
    for sig in ("", "gemini:c2ln"):
        body = json.dumps(conversation({"type": "thinking", "thinking": "x", "signature": sig}, ANTHROPIC_THINKING, TOOL)).encode()
        out = msgspec.json.decode(scrub(body) or b"null")
        assert out["messages"][1]["content"] == [ANTHROPIC_THINKING, TOOL]


def test_a_turn_of_only_foreign_thinking_keeps_a_non_empty_text() -> None:
    body = msgspec.json.encode(conversation({"type": "thinking", "thinking": "x", "signature": ""}))
    out = msgspec.json.decode(scrub(body) or b"null")
    (block,) = out["messages"][1]["content"]
    assert block["type"] == "text" and block["text"]


async def test_the_passthrough_sends_the_scrubbed_body(fake: FakeAnthropic, sidecar: InProcessSidecar, client: aiohttp.ClientSession) -> None:
    body = msgspec.json.encode(conversation({"type": "thinking", "thinking": "x", "signature": "gemini:abc"}, TOOL))
    headers = {"x-api-key": "k", "anthropic-version": "2023-06-01", "content-type": "application/json"}
    async with client.post(sidecar.url + "/v1/messages", data=body, headers=headers) as r:
        assert r.status == 200
    sent = fake.requests[-1].json()
    assert sent["messages"][1]["content"] == [TOOL]


def test_bedrock_and_vertex_bodies_drop_foreign_thinking_too() -> None:
    from sidecar.providers import betas

    body = conversation({"type": "thinking", "thinking": "x", "signature": "gemini:abc"}, ANTHROPIC_THINKING, TOOL)
    out = betas.adapt(body, [], [])
    assert out["messages"][1]["content"] == [ANTHROPIC_THINKING, TOOL]
    assert body["messages"][1]["content"][0]["signature"] == "gemini:abc"  # the client's copy is untouched
