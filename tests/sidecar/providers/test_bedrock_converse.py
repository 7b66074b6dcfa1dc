"""Bedrock Converse for non-Claude models: the translation both ways, streaming through a
real sidecar to the fake Bedrock (which checks the Converse shapes as Bedrock does)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.errors import StreamBroken
from sidecar.protocol import bedrock_converse, eventstream
from sidecar.protocol.bedrock_converse import (
    ConverseStreamTranslator,
    ToolNames,
    short_name,
    to_converse,
)
from sidecar.testing import anthropic_sse as sse
from sidecar.testing.fake_bedrock import (
    AwsKeys,
    CutFrame,
    FakeBedrock,
    StreamException,
    bedrock_sidecar,
    check_converse,
    clean_aws_env,
)
from sidecar.testing.fake_behaviours import Text, ToolUse
from sidecar.testing.harness import InProcessSidecar

NOVA = "amazon.nova-pro-v1:0"
LONG = "mcp__very_long_server_name__and_an_even_longer_tool_name_exceeding_limits"


def test_request_translation() -> None:
    body = {
        "model": NOVA, "max_tokens": 300, "temperature": 0.2, "top_p": 0.9, "top_k": 5, "stop_sequences": ["\nHuman:"],
        "system": [{"type": "text", "text": "A", "cache_control": {"type": "ephemeral"}}, {"type": "text", "text": "B"}],
        "tools": [{"name": "Read", "description": "read", "input_schema": {"type": "object"}},
                  {"name": LONG, "input_schema": {"type": "object", "properties": {}}},
                  {"type": "web_search_20250305", "name": "web_search"}],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "look"},
                                         {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}}]},
            {"role": "system", "content": "mid-conversation system text"},
            {"role": "assistant", "content": [{"type": "thinking", "thinking": "plan", "signature": "sig"},
                                              {"type": "text", "text": "Reading."},
                                              {"type": "tool_use", "id": "toolu_01", "name": "Read", "input": {"file_path": "/a"}},
                                              {"type": "tool_use", "id": "functions.x:0", "name": LONG, "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01", "content": "ok"},
                                         {"type": "tool_result", "tool_use_id": "functions.x:0", "is_error": True,
                                          "content": [{"type": "text", "text": "ENOENT"}]},
                                         {"type": "text", "text": "continue"}]},
        ],
    }  # fmt: skip
    out, names = to_converse(body)
    check_converse(out)  # what Bedrock accepts
    short = short_name(LONG)
    assert len(short) == 64 and short.startswith(LONG[:55] + "_") and names.restore(short) == LONG
    assert out["system"] == [{"text": "A"}, {"text": "B"}, {"text": "mid-conversation system text"}]
    assert out["inferenceConfig"] == {"maxTokens": 300, "temperature": 0.2, "topP": 0.9, "stopSequences": ["\nHuman:"]}
    assert out["toolConfig"]["toolChoice"] == {"any": {}}
    assert [t["toolSpec"]["name"] for t in out["toolConfig"]["tools"]] == ["Read", short]
    user, assistant, result = out["messages"]
    assert user["content"][1] == {"image": {"format": "png", "source": {"bytes": "iVBOR"}}}
    assert assistant["content"] == [
        {"text": "Reading."},
        {"toolUse": {"toolUseId": "toolu_01", "name": "Read", "input": {"file_path": "/a"}}},
        {"toolUse": {"toolUseId": short_name("functions.x:0"), "name": short, "input": {}}},
    ]
    assert result["content"] == [
        {"toolResult": {"toolUseId": "toolu_01", "content": [{"text": "ok"}]}},
        {"toolResult": {"toolUseId": short_name("functions.x:0"), "content": [{"text": "ENOENT"}], "status": "error"}},
        {"text": "continue"},
    ]


def test_cache_points_documents_and_choices() -> None:
    body = {"max_tokens": 10, "system": [{"type": "text", "text": "S", "cache_control": {"type": "ephemeral"}}],
            "tools": [{"name": "Bash", "input_schema": {}}], "tool_choice": {"type": "none"},
            "messages": [{"role": "user", "content": [
                {"type": "document", "title": "Spec: v2.pdf!", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBER"}},
                {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "plain words"}},
                {"type": "text", "text": "sum up", "cache_control": {"type": "ephemeral"}}]}]}  # fmt: skip
    out, _ = to_converse(body, cache_points=True)
    assert out["system"] == [{"text": "S"}, {"cachePoint": {"type": "default"}}]
    docs = out["messages"][0]["content"]
    assert docs[0] == {"document": {"format": "pdf", "name": "Spec v2 pdf", "source": {"bytes": "JVBER"}}}
    assert docs[1]["document"]["format"] == "txt" and docs[1]["document"]["source"]["bytes"] == "cGxhaW4gd29yZHM="
    assert docs[-1] == {"cachePoint": {"type": "default"}}
    assert "toolConfig" not in out  # tool_choice none and no tool turns: no tools offered
    tool_choice = {**body, "tool_choice": {"type": "tool", "name": "Bash"}}
    assert to_converse(tool_choice)[0]["toolConfig"]["toolChoice"] == {"tool": {"name": "Bash"}}


def test_url_images_are_refused_clearly() -> None:
    body = {"messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}]}]}
    with pytest.raises(bedrock_converse.ConverseRequestError, match="takes images as bytes"):
        to_converse(body)


def test_response_translation() -> None:
    names = ToolNames()
    short = names.add(LONG)
    data = {"output": {"message": {"role": "assistant", "content": [
                {"reasoningContent": {"reasoningText": {"text": "hmm", "signature": "s1"}}},
                {"reasoningContent": {"redactedContent": "b64=="}},
                {"text": "Let me check."},
                {"toolUse": {"toolUseId": "tooluse_1", "name": short, "input": {"q": 1}}}]}},
            "stopReason": "tool_use", "usage": {"inputTokens": 200, "outputTokens": 50, "totalTokens": 1050,
                                                  "cacheReadInputTokens": 800, "cacheWriteInputTokens": 0}}  # fmt: skip
    msg = bedrock_converse.to_message(data, "claude-sonnet-5", names)
    assert msg["model"] == "claude-sonnet-5" and msg["stop_reason"] == "tool_use"
    assert msg["content"] == [
        {"type": "thinking", "thinking": "hmm", "signature": "s1"},
        {"type": "redacted_thinking", "data": "b64=="},
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": "tooluse_1", "name": LONG, "input": {"q": 1}},
    ]
    assert msg["usage"] == {"input_tokens": 200, "output_tokens": 50, "cache_read_input_tokens": 800, "cache_creation_input_tokens": 0}


@pytest.mark.parametrize(("reason", "want"), [("end_turn", "end_turn"), ("max_tokens", "max_tokens"), ("stop_sequence", "stop_sequence"),
                                              ("guardrail_intervened", "refusal"), ("content_filtered", "refusal"), ("tool_use", "tool_use")])
def test_stop_reasons(reason: str, want: str) -> None:
    assert bedrock_converse.stop_reason(reason) == want


def _frames(*events: tuple[str, dict[str, Any]]) -> bytes:
    return b"".join(eventstream.event(n, msgspec.json.encode(d)) for n, d in events)


def test_stream_cut_mid_tool_arguments_is_an_error_not_end_turn() -> None:
    tr = ConverseStreamTranslator("m", ToolNames())
    data = _frames(("messageStart", {"role": "assistant"}),
                   ("contentBlockStart", {"contentBlockIndex": 0, "start": {"toolUse": {"toolUseId": "t1", "name": "Bash"}}}),
                   ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"toolUse": {"input": "{\"comm"}}}))  # fmt: skip
    events = [e for i in range(0, len(data), 5) for e in tr.feed(data[i : i + 5])]
    assert [n for n, _ in events] == ["message_start", "content_block_start", "content_block_delta"]
    with pytest.raises(StreamBroken):
        tr.end()


def test_stream_finish_without_metadata_still_ends() -> None:
    tr = ConverseStreamTranslator("m", ToolNames())
    tr.feed(_frames(("messageStart", {"role": "assistant"}), ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "hi"}}),
                    ("messageStop", {"stopReason": "end_turn"})))  # fmt: skip
    names = [n for n, _ in tr.end()]
    assert names == ["content_block_stop", "message_delta", "message_stop"]


STREAM = [
    ("messageStart", {"role": "assistant"}),
    ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"reasoningContent": {"text": "我想"}}}),
    ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"reasoningContent": {"signature": "c2ln"}}}),
    ("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"text": "Voilà — "}}),
    ("contentBlockStart", {"contentBlockIndex": 2, "start": {"toolUse": {"toolUseId": "t1", "name": "Bash"}}}),
    ("contentBlockDelta", {"contentBlockIndex": 2, "delta": {"toolUse": {"input": '{"command": "echo é"}'}}}),
    ("contentBlockStop", {"contentBlockIndex": 2}),
    ("messageStop", {"stopReason": "tool_use"}),
    ("metadata", {"usage": {"inputTokens": 10, "outputTokens": 20, "totalTokens": 30}}),
]


def _all_events(pieces: list[bytes]) -> list[tuple[str, dict[str, Any]]]:
    tr = ConverseStreamTranslator("m", ToolNames())
    out = [e for p in pieces for e in tr.feed(p)] + tr.end()
    for _, d in out:  # the message id is random per translator
        d.get("message", {}).pop("id", None)
    return out


@settings(max_examples=150, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0), max_size=30))
def test_converse_stream_at_any_boundaries_gives_the_same_events(cuts: list[int]) -> None:
    data = _frames(*STREAM)
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    assert _all_events(pieces) == _all_events([data])


# ---------------------------------------------------------------- through a sidecar


@pytest.fixture
async def fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> AsyncIterator[FakeBedrock]:
    keys = AwsKeys()
    clean_aws_env(monkeypatch, tmp_path, keys)
    async with FakeBedrock(keys=keys, split=5) as f:
        yield f


@pytest.fixture
async def sc(fake: FakeBedrock, hermetic_env: Path) -> AsyncIterator[InProcessSidecar]:
    async with bedrock_sidecar(fake, hermetic_env) as s:
        yield s


TOOLS = [{"name": LONG, "description": "a long MCP tool", "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}}}]


@pytest.mark.parametrize(
    "reply",
    [Text("Plain answer, with ünïcödé — and more words.", chunks=7),
     Text("After thinking.", thinking="Let me reason about it."),
     ToolUse(name=short_name(LONG), input={"q": "北京"}, text="Calling the tool.", chunks=5)],
    ids=["text", "thinking", "tool"],
)
async def test_sdk_stream_equals_the_message(fake: FakeBedrock, sc: InProcessSidecar, reply: Any) -> None:
    fake.script(reply, reply)
    client = anthropic.AsyncAnthropic(base_url=sc.url, api_key=sc.token, max_retries=0)
    kw: dict[str, Any] = {"model": NOVA, "max_tokens": 200, "tools": TOOLS, "messages": [{"role": "user", "content": "go"}]}
    async with client.messages.stream(**kw) as stream:
        streamed = (await stream.get_final_message()).model_dump()
    whole = (await client.messages.create(**kw)).model_dump()
    await client.close()
    for m in (streamed, whole):
        m.pop("id")
        for block in m["content"]:
            block.pop("id", None)
    assert streamed == whole
    assert whole["model"] == NOVA
    if isinstance(reply, ToolUse):
        assert whole["content"][-1]["name"] == LONG and whole["content"][-1]["input"] == {"q": "北京"}
        assert whole["stop_reason"] == "tool_use"
    assert [r.path.rsplit("/", 1)[1] for r in fake.requests] == ["converse-stream", "converse"]


async def post(sc: InProcessSidecar, body: dict[str, Any], path: str = "/v1/messages") -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as s, s.post(sc.url + path, json=body, headers={"x-api-key": sc.token}) as r:
        return r.status, await r.read()


async def test_exception_in_converse_stream_is_an_error_event(fake: FakeBedrock, sc: InProcessSidecar) -> None:
    fake.script(StreamException(after_events=2, code="throttlingException", message="Too many tokens"))
    status, raw = await post(sc, {"model": NOVA, "max_tokens": 10, "stream": True, "messages": [{"role": "user", "content": "go"}]})
    assert status == 200
    assert sse.sse_events(raw)[-1] == ("error", {"type": "error", "error": {"type": "rate_limit_error", "message": "Too many tokens"}})


async def test_a_cut_converse_stream_aborts(fake: FakeBedrock, sc: InProcessSidecar) -> None:
    fake.script(CutFrame(after_events=3))
    with pytest.raises(aiohttp.ClientPayloadError):
        await post(sc, {"model": NOVA, "max_tokens": 10, "stream": True, "messages": [{"role": "user", "content": "go"}]})


async def test_converse_validation_errors_keep_bedrocks_message(fake: FakeBedrock, sc: InProcessSidecar) -> None:
    status, raw = await post(sc, {"model": NOVA, "max_tokens": 10, "messages": [{"role": "assistant", "content": "I start"}]})
    assert status == 400
    assert msgspec.json.decode(raw)["error"] == {"type": "invalid_request_error", "message": "A conversation must start with a user message. Try again with a conversation that starts with a user message."}


async def test_url_image_is_a_400_before_any_upstream_call(fake: FakeBedrock, sc: InProcessSidecar) -> None:
    img = {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}
    status, raw = await post(sc, {"model": NOVA, "max_tokens": 10, "messages": [{"role": "user", "content": [img]}]})
    assert status == 400 and "takes images as bytes" in msgspec.json.decode(raw)["error"]["message"]
    assert fake.requests == []


async def test_count_tokens_with_converse_input(fake: FakeBedrock, sc: InProcessSidecar) -> None:
    body = {"model": NOVA, "messages": [{"role": "user", "content": "foo"}], "tools": TOOLS}
    status, raw = await post(sc, body, "/v1/messages/count_tokens")
    assert status == 200, raw
    conv = fake.requests[0].json()["input"]["converse"]
    assert conv["messages"] == [{"role": "user", "content": [{"text": "foo"}]}]
    assert conv["toolConfig"]["tools"][0]["toolSpec"]["name"] == short_name(LONG)
    assert msgspec.json.decode(raw) == {"input_tokens": sse.estimate_tokens(msgspec.json.encode(conv))}
