"""Bedrock conformance: every captured Claude Code request through a real sidecar to the fake
Bedrock (which refuses what Bedrock refuses), by InvokeModel and by Converse; the upstream
body is the Anthropic body with exactly the documented changes; streamed answers read by
the anthropic SDK's stream helper equal the non-streamed ones; and the Converse translation
table for the applicable cases of the 45 (numbers from the research notes)."""

from __future__ import annotations

import base64
import copy
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anthropic
import msgspec
import pytest

from sidecar.protocol.bedrock_converse import (
    ConverseStreamTranslator,
    ToolNames,
    short_name,
    to_converse,
    to_message,
)
from sidecar.protocol.eventstream import event
from sidecar.testing import captures
from sidecar.testing.fake_bedrock import (
    AwsKeys,
    FakeBedrock,
    bedrock_sidecar,
    check_converse,
    clean_aws_env,
)
from sidecar.testing.fake_behaviours import Text, ToolUse
from sidecar.testing.harness import InProcessSidecar

CAPTURES = [p.stem for p in captures.all_captures()]
# Of the flags Claude Code sends, the ones Bedrock accepts (everything else is dropped).
BEDROCK_TAKES = {"context-1m-2025-08-07", "interleaved-thinking-2025-05-14", "context-management-2025-06-27", "effort-2025-11-24"}
REPLIES = {
    "text": Text("Done. The answer is 42 — ✓."),
    "thinking": Text("Final words.", thinking="First I consider the files."),
    "tool": ToolUse(name="Bash", input={"command": "git status", "description": "Show status"}, text="Checking."),
}
SDK_KEYS = ("model", "max_tokens", "messages", "system", "tools", "metadata", "thinking")


def expected_invoke_body(body: dict[str, Any], beta_header: str) -> dict[str, Any]:
    """The documented changes, spelled out independently of the code under test."""
    exp = copy.deepcopy({k: v for k, v in body.items() if k not in ("model", "stream")})
    kept = [f for f in beta_header.split(",") if f in BEDROCK_TAKES]
    exp["anthropic_version"] = "bedrock-2023-05-31"
    if kept:
        exp["anthropic_beta"] = kept
    if "format" in exp.get("output_config", {}):  # structured outputs are not taken by Bedrock
        del exp["output_config"]["format"]
    folded: list[dict[str, Any]] = []
    for m in exp["messages"]:
        if m["role"] == "system":
            m = {"role": "user", "content": [{"type": "text", "text": f"<system-reminder>\n{m['content']}\n</system-reminder>"}]}
        if folded and folded[-1]["role"] == m["role"] == "user":
            prev = folded[-1]["content"]
            prev = prev if isinstance(prev, list) else [{"type": "text", "text": prev}]
            cur = m["content"] if isinstance(m["content"], list) else [{"type": "text", "text": m["content"]}]
            folded[-1] = {**folded[-1], "content": prev + cur}
        else:
            folded.append(m)
    exp["messages"] = folded
    return exp


@pytest.fixture
async def fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> AsyncIterator[FakeBedrock]:
    keys = AwsKeys(session_token="FwoGZXIvYXdzEJr//conformance")
    clean_aws_env(monkeypatch, tmp_path, keys)
    async with FakeBedrock(keys=keys, split=11) as f:
        yield f


@pytest.fixture
async def sc(fake: FakeBedrock, hermetic_env: Path) -> AsyncIterator[InProcessSidecar]:
    async with bedrock_sidecar(fake, hermetic_env) as s:
        yield s


def sdk_params(body: dict[str, Any], model: str) -> dict[str, Any]:
    params = {k: v for k, v in body.items() if k in SDK_KEYS}
    params["model"] = model
    extra = {k: v for k, v in body.items() if k not in SDK_KEYS and k != "stream"}
    if extra:
        params["extra_body"] = extra
    return params


def strip_ids(m: dict[str, Any]) -> dict[str, Any]:
    m.pop("id")
    for block in m["content"]:
        block.pop("id", None)
    return m


def beta_of(cap: captures.Capture) -> str:
    return next(v for k, v in cap.headers if k.lower() == "anthropic-beta")


@pytest.mark.parametrize("reply", list(REPLIES), ids=list(REPLIES))
@pytest.mark.parametrize("name", [c for c in CAPTURES if c != "count-tokens"])
@pytest.mark.parametrize("model", ["us.anthropic.claude-opus-4-8-v1:0", "amazon.nova-pro-v1:0"], ids=["invoke", "converse"])
async def test_captured_requests(fake: FakeBedrock, sc: InProcessSidecar, name: str, reply: str, model: str) -> None:
    cap = captures.load(name)
    body = cap.data["body"]
    behaviour = REPLIES[reply]
    if model.startswith("amazon.") and isinstance(behaviour, ToolUse) and body.get("tools"):
        behaviour = ToolUse(name=body["tools"][0]["name"], input={"x": 1}, text="Checking.")
    fake.script(behaviour, behaviour)
    client = anthropic.AsyncAnthropic(base_url=sc.url, api_key=sc.token, max_retries=0,
                                      default_headers={"anthropic-beta": beta_of(cap)})  # fmt: skip
    params = sdk_params(body, model)
    async with client.messages.stream(**params) as stream:
        streamed = strip_ids((await stream.get_final_message()).model_dump())
    whole = strip_ids((await client.messages.create(**params, timeout=600)).model_dump())
    await client.close()
    assert streamed == whole
    assert fake.auth_failures == []
    sent = fake.requests[0].json()
    if model.startswith("us.anthropic."):
        assert sent == expected_invoke_body({**body, "model": model}, beta_of(cap))
        assert fake.requests[1].json() == sent  # the non-streaming call sends the same body
    else:
        check_converse(sent)  # the fake refuses what Bedrock refuses; here, to be explicit
        tools = {t["toolSpec"]["name"] for t in sent.get("toolConfig", {}).get("tools", [])}
        assert tools == {short_name(t["name"]) for t in body.get("tools", [])}


async def test_captured_count_tokens(fake: FakeBedrock, sc: InProcessSidecar) -> None:
    cap = captures.load("count-tokens")
    client = anthropic.AsyncAnthropic(base_url=sc.url, api_key=sc.token, max_retries=0)
    body = cap.data["body"]
    got = await client.messages.count_tokens(model="anthropic.claude-opus-4-8-v1:0", messages=body["messages"], tools=body["tools"],
                                             extra_headers={"anthropic-beta": beta_of(cap)})  # fmt: skip
    await client.close()
    inner = msgspec.json.decode(base64.b64decode(fake.requests[0].json()["input"]["invokeModel"]["body"]))
    assert inner == {**expected_invoke_body({**body, "model": "x"}, beta_of(cap)), "max_tokens": 1}
    assert got.input_tokens > 0


# ---------------------------------------------------------------- Converse: the 45, where they apply

IMG = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}}
LONG = "mcp__very_long_server_name__and_an_even_longer_tool_name_exceeding_limits"
TOOL = {"name": "Read", "input_schema": {"type": "object"}}
USE = {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_01", "name": "Read", "input": {"file_path": "/a"}}]}


def _user(*blocks: Any) -> dict[str, Any]:
    return {"role": "user", "content": list(blocks)}


REQUEST_CASES: list[tuple[int, dict[str, Any], str, Any]] = [
    (1, {"system": "Be terse.", "messages": [_user({"type": "text", "text": "hi"})]}, "system", [{"text": "Be terse."}]),
    (2, {"system": [{"type": "text", "text": "A", "cache_control": {"type": "ephemeral"}}, {"type": "text", "text": "B"}],
         "messages": [_user({"type": "text", "text": "hi"})]}, "system", [{"text": "A"}, {"text": "B"}]),
    (3, {"messages": [_user(IMG)]}, "messages", [{"role": "user", "content": [{"image": {"format": "png", "source": {"bytes": "iVBOR"}}}]}]),
    (4, {"tools": [TOOL], "messages": [_user({"type": "text", "text": "go"}),
         {"role": "assistant", "content": [{"type": "text", "text": "Reading."}, USE["content"][0]]}]},
     "messages.1", {"role": "assistant", "content": [{"text": "Reading."}, {"toolUse": {"toolUseId": "toolu_01", "name": "Read", "input": {"file_path": "/a"}}}]}),
    (5, {"tools": [TOOL], "messages": [_user({"type": "text", "text": "go"}),
         {"role": "assistant", "content": [USE["content"][0], {**USE["content"][0], "id": "toolu_02"}]},
         _user({"type": "tool_result", "tool_use_id": "toolu_01", "content": "ok"},
               {"type": "tool_result", "tool_use_id": "toolu_02", "content": [{"type": "text", "text": "42"}]}, {"type": "text", "text": "continue"})]},
     "messages.2", {"role": "user", "content": [{"toolResult": {"toolUseId": "toolu_01", "content": [{"text": "ok"}]}},
                                                 {"toolResult": {"toolUseId": "toolu_02", "content": [{"text": "42"}]}}, {"text": "continue"}]}),
    (6, {"tools": [TOOL], "messages": [_user({"type": "text", "text": "go"}), USE,
         _user({"type": "tool_result", "tool_use_id": "toolu_01", "content": [{"type": "text", "text": "screenshot:"}, IMG]})]},
     "messages.2", {"role": "user", "content": [{"toolResult": {"toolUseId": "toolu_01", "content": [
         {"text": "screenshot:"}, {"image": {"format": "png", "source": {"bytes": "iVBOR"}}}]}}]}),
    (7, {"tools": [TOOL], "messages": [_user({"type": "text", "text": "go"}), USE,
         _user({"type": "tool_result", "tool_use_id": "toolu_01", "is_error": True, "content": "ENOENT"})]},
     "messages.2", {"role": "user", "content": [{"toolResult": {"toolUseId": "toolu_01", "content": [{"text": "ENOENT"}], "status": "error"}}]}),
    (8, {"tools": [TOOL], "tool_choice": {"type": "any"}, "messages": [_user({"type": "text", "text": "go"})]}, "toolConfig.toolChoice", {"any": {}}),
    (8, {"tools": [TOOL], "tool_choice": {"type": "tool", "name": "Read"}, "messages": [_user({"type": "text", "text": "go"})]},
     "toolConfig.toolChoice", {"tool": {"name": "Read"}}),
    (9, {"tools": [{**TOOL, "type": "custom", "description": "read"}, {"type": "web_search_20250305", "name": "web_search"}],
         "messages": [_user({"type": "text", "text": "go"})]},
     "toolConfig.tools", [{"toolSpec": {"name": "Read", "inputSchema": {"json": {"type": "object"}}, "description": "read"}}]),
    (10, {"tools": [{"name": LONG, "input_schema": {}}], "messages": [_user({"type": "text", "text": "go"})]},
     "toolConfig.tools.0.toolSpec.name", short_name(LONG)),
    (16, {"max_tokens": 32000, "top_k": 3, "stop_sequences": ["\nHuman:"], "messages": [_user({"type": "text", "text": "go"})]},
     "inferenceConfig", {"maxTokens": 32000, "stopSequences": ["\nHuman:"]}),
    (18, {"messages": [_user({"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBER"}})]},
     "messages.0.content.0", {"document": {"format": "pdf", "name": "document 1", "source": {"bytes": "JVBER"}}}),
    (19, {"tools": [TOOL], "messages": [_user({"type": "text", "text": "go"}),
          {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_07", "name": "", "input": {}}]}]},
     "messages.1.content.0.toolUse.name", "unnamed_tool"),
    (25, {"tools": [TOOL], "messages": [_user({"type": "text", "text": "go"}),
          {"role": "assistant", "content": [{"type": "tool_use", "id": "functions.Bash:0", "name": "Read", "input": {}}]}]},
     "messages.1.content.0.toolUse.toolUseId", short_name("functions.Bash:0")),
]


def _at(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = obj[int(part)] if isinstance(obj, list) else obj[part]
    return obj


@pytest.mark.parametrize(("case", "body", "where", "want"), REQUEST_CASES, ids=[f"case{c[0]}-{i}" for i, c in enumerate(REQUEST_CASES)])
def test_converse_request_cases(case: int, body: dict[str, Any], where: str, want: Any) -> None:
    out, _ = to_converse({"max_tokens": 100, **body})
    assert _at(out, where) == want
    check_converse(out)


def _stream(*events: tuple[str, dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    tr = ConverseStreamTranslator("claude-sonnet-5", ToolNames())
    data = b"".join(event(n, msgspec.json.encode(d)) for n, d in events)
    out = [e for i in range(0, len(data), 3) for e in tr.feed(data[i : i + 3])]
    return out + tr.end()


START = ("messageStart", {"role": "assistant"})


def _stop(reason: str) -> tuple[str, dict[str, Any]]:
    return ("messageStop", {"stopReason": reason})


def _meta(i: int, o: int, read: int = 0) -> tuple[str, dict[str, Any]]:
    return ("metadata", {"usage": {"inputTokens": i, "outputTokens": o, "totalTokens": i + o + read, "cacheReadInputTokens": read}})


def test_case21_22_27_28_message() -> None:
    data = {"output": {"message": {"role": "assistant", "content": [{"text": "Let me check."},
            {"toolUse": {"toolUseId": "tooluse_1", "name": "Read", "input": {"file_path": "/a"}}}]}},
            "stopReason": "tool_use", "usage": {"inputTokens": 200, "outputTokens": 50, "totalTokens": 1050, "cacheReadInputTokens": 800}}  # fmt: skip
    msg = to_message(data, "claude-sonnet-5", ToolNames())
    assert msg["model"] == "claude-sonnet-5" and msg["stop_reason"] == "tool_use"  # 28, 21
    assert [b["type"] for b in msg["content"]] == ["text", "tool_use"]  # 22
    assert msg["usage"] == {"input_tokens": 200, "output_tokens": 50, "cache_read_input_tokens": 800, "cache_creation_input_tokens": 0}  # 27


def test_case29_text_stream() -> None:
    ev = _stream(START, ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Hel"}}),
                 ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "lo"}}),
                 ("contentBlockStop", {"contentBlockIndex": 0}), _stop("end_turn"), _meta(12, 2))  # fmt: skip
    assert [n for n, _ in ev] == ["message_start", "content_block_start", "content_block_delta", "content_block_delta",
                                  "content_block_stop", "message_delta", "message_stop"]  # fmt: skip
    assert ev[-2][1]["delta"]["stop_reason"] == "end_turn" and ev[-2][1]["usage"]["input_tokens"] == 12


def test_case30_32_text_then_parallel_tools() -> None:
    ev = _stream(START, ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Two calls."}}),
                 ("contentBlockStart", {"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": "t1", "name": "Bash"}}}),
                 ("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"toolUse": {"input": "{\"command\":"}}}),
                 ("contentBlockStart", {"contentBlockIndex": 2, "start": {"toolUse": {"toolUseId": "t2", "name": "Read"}}}),
                 ("contentBlockDelta", {"contentBlockIndex": 2, "delta": {"toolUse": {"input": "{\"file_path\":\"/a\"}"}}}),
                 ("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"toolUse": {"input": "\"ls\"}"}}}),
                 _stop("tool_use"), _meta(5, 9))  # fmt: skip
    open_blocks: set[int] = set()
    args: dict[int, str] = {}
    for name, d in ev:  # 32: no delta for a block that is not open
        if name == "content_block_start":
            open_blocks.add(d["index"])
        elif name == "content_block_delta":
            assert d["index"] in open_blocks
            args[d["index"]] = args.get(d["index"], "") + d["delta"].get("partial_json", "")
        elif name == "content_block_stop":
            open_blocks.remove(d["index"])
    assert args[1] == '{"command":"ls"}' and args[2] == '{"file_path":"/a"}'


def test_case35_reasoning_stream() -> None:
    ev = _stream(START, ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"reasoningContent": {"text": "th"}}}),
                 ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"reasoningContent": {"signature": "sig=="}}}),
                 ("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"text": "Answer"}}), _stop("end_turn"), _meta(1, 2))  # fmt: skip
    kinds = [(n, d.get("delta", d.get("content_block", {})).get("type")) for n, d in ev if n.startswith("content_block")]
    assert kinds == [("content_block_start", "thinking"), ("content_block_delta", "thinking_delta"),
                     ("content_block_delta", "signature_delta"), ("content_block_stop", None),
                     ("content_block_start", "text"), ("content_block_delta", "text_delta"), ("content_block_stop", None)]  # fmt: skip


def test_case38_mid_stream_error_shape() -> None:
    from sidecar.protocol.eventstream import exception

    tr = ConverseStreamTranslator("m", ToolNames())
    out = tr.feed(event("messageStart", b'{"role":"assistant"}') + exception("serviceUnavailableException", b'{"message":"Bedrock is unable to process your request."}'))
    assert out[-1] == ("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Bedrock is unable to process your request."}})


def test_case39_length_during_tool_args_is_max_tokens() -> None:
    ev = _stream(START, ("contentBlockStart", {"contentBlockIndex": 0, "start": {"toolUse": {"toolUseId": "t1", "name": "Write"}}}),
                 ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"toolUse": {"input": "{\"content\":\"abc"}}}),
                 _stop("max_tokens"), _meta(3, 100))  # fmt: skip
    assert ev[-2][1]["delta"]["stop_reason"] == "max_tokens"
    assert any(d.get("delta", {}).get("partial_json") == '{"content":"abc' for _, d in ev)  # passed through untouched
