"""Conformance of the openai / openai-compatible family: the applicable cases of the 45 in
../shared/research/anchors-litellm-ccr-portkey.md, as one table, plus every captured Claude
Code request.

Request side: each case's Anthropic request is translated and checked by
`validate_chat_request`, a validator of what the Chat Completions API accepts (roles and
their fields, content parts, function names ^[a-zA-Z0-9_-]{1,64}$, tool schemas, tool
messages that answer the preceding assistant's tool calls, tool_choice naming a tool,
response_format, no Anthropic-only field), then by the case's own expectations. Every
capture in shared/fixtures/claude-code goes through every preset into the same validator.

Response side: each case with a scripted answer runs through a real sidecar to the fake
OpenAI upstream (which validates every request it gets), non-streaming and streaming; the
official `anthropic` SDK's stream helper must consume the stream and accumulate the same
message as the non-streaming call (ids aside).

Not applicable to this family, and where they are covered: 11 (Gemini's schema subset:
the gemini suite; here only `$schema` is stripped, case 9), 14 (signed thinking to
Anthropic: never sent here, case 13 checks no signature leaks; the Anthropic side filters),
44 (tier mapping: the router), 45 (cache keys: the cache). 40 (client disconnect) and 41
(count_tokens) are checked at the end through the sidecar.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import httpx2
import pytest

from sidecar.appkeys import LEDGER
from sidecar.errors import InvalidRequest
from sidecar.protocol.openai import PRESETS, Quirks, quirks_for, translate_request
from sidecar.testing import captures
from sidecar.testing.fake_openai import Error, FakeOpenAI, Reply, StreamError, ToolCall, Wire
from sidecar.testing.harness import InProcessSidecar, sidecar_in_process
from sidecar.testing.openai_validate import validate_chat_request

REQUESTED = "claude-opus-4-8"
UPSTREAM = "gpt-5-mini"

# ---------------------------------------------------------------- the cases


def u(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


def a(content: Any) -> dict[str, Any]:
    return {"role": "assistant", "content": content}


def use(tid: str, name: str = "Read", args: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"type": "tool_use", "id": tid, "name": name, "input": args if args is not None else {"file_path": "/a"}}


def result(tid: str, content: Any = "ok", **kw: Any) -> dict[str, Any]:
    return {"type": "tool_result", "tool_use_id": tid, "content": content, **kw}


READ = {"name": "Read", "description": "Read a file", "input_schema": {"type": "object", "properties": {"file_path": {"type": "string"}}, "required": ["file_path"]}}
BASH = {"name": "Bash", "input_schema": {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object", "properties": {"command": {"type": "string"}}}}
LONG = "mcp__very_long_server_name__and_an_even_longer_tool_name_exceeding_limits"
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="


@dataclass
class Case:
    """One conformance case: the request (its Chat form checked by `expect`) and, when
    `reply` is set, the answer (its Anthropic form checked by `check`, whole and streamed)."""

    n: str
    name: str
    body: dict[str, Any]
    expect: Callable[[dict[str, Any]], Any] = lambda chat: None
    reply: Reply | None = None
    check: Callable[[dict[str, Any]], Any] = lambda msg: None
    options: dict[str, Any] = field(default_factory=lambda: {"preset": "openai"})
    refused: str | None = None  # the InvalidRequest message expected instead of a translation
    # A max_tokens cut inside arguments: the stream passes the partial JSON as it came (the
    # SDK makes what it can of it), the whole answer does not repair it: inputs differ.
    same_input: bool = True

    @property
    def quirks(self) -> Quirks:
        return quirks_for("conformance", "openai-compatible", self.options)


def _msgs(chat: dict[str, Any], role: str) -> list[dict[str, Any]]:
    return [m for m in chat["messages"] if m["role"] == role]


CASES = [
    Case("1", "system string", {"system": "Be terse.", "messages": [u("hi")]},
         lambda c: c["messages"][0] == {"role": "system", "content": "Be terse."},
         Reply(text="Hi."), lambda m: m["content"] == [{"type": "text", "text": "Hi."}]),
    Case("2", "system blocks with cache_control", {"system": [{"type": "text", "text": "A", "cache_control": {"type": "ephemeral"}}, {"type": "text", "text": "B"}], "messages": [u("hi")]},
         lambda c: c["messages"][0] == {"role": "system", "content": "A\n\nB"}),
    Case("2b", "role system inside messages (Claude Code), kept and hoisted", {"system": "S", "messages": [u("hi"), {"role": "system", "content": "Agents: Explore"}, a("ok"), u("go")]},
         lambda c: [m["role"] for m in c["messages"]] == ["system", "user", "system", "assistant", "user"]),
    Case("2c", "role system hoisted for vLLM templates", {"system": "S", "messages": [u("hi"), {"role": "system", "content": "Agents"}, a("ok"), u("go")]},
         lambda c: c["messages"][0]["content"] == "S\n\nAgents" and len(_msgs(c, "system")) == 1, options={"preset": "vllm"}),
    Case("3", "base64 and URL images", {"messages": [u([{"type": "text", "text": "what?"}, {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
                                                         {"type": "image", "source": {"type": "url", "url": "https://example.test/y.png"}}])]},
         lambda c: [p["type"] for p in c["messages"][0]["content"]] == ["text", "image_url", "image_url"],
         Reply(text="A red pixel."), lambda m: m["stop_reason"] == "end_turn"),
    Case("4", "assistant text + tool_use", {"tools": [READ], "messages": [u("read /a"), a([{"type": "text", "text": "Reading."}, use("toolu_01")]), u([result("toolu_01", "contents")])]},
         lambda c: c["messages"][1] == {"role": "assistant", "content": "Reading.", "tool_calls": [{"id": "toolu_01", "type": "function", "function": {"name": "Read", "arguments": '{"file_path":"/a"}'}}]},
         Reply(text="It says contents."), lambda m: m["content"][0]["text"] == "It says contents."),
    Case("5", "several tool results before the user's text, in order",
         {"tools": [READ], "messages": [u("go"), a([use("toolu_01"), use("toolu_02")]), u([result("toolu_01"), result("toolu_02", [{"type": "text", "text": "42"}]), {"type": "text", "text": "continue"}])]},
         lambda c: [(m["role"], m.get("tool_call_id"), m["content"]) for m in c["messages"][2:]] == [("tool", "toolu_01", "ok"), ("tool", "toolu_02", "42"), ("user", None, "continue")],
         Reply(text="Done.")),
    Case("6", "a tool result with text and an image: one tool message",
         {"tools": [READ], "messages": [u("shot"), a([use("toolu_03")]), u([result("toolu_03", [{"type": "text", "text": "screenshot:"}, {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}])])]},
         lambda c: len(_msgs(c, "tool")) == 1 and c["messages"][-1]["content"][1]["type"] == "image_url"),
    Case("7", "empty result and is_error", {"tools": [READ], "messages": [u("go"), a([use("toolu_04"), use("toolu_05")]), u([{"type": "tool_result", "tool_use_id": "toolu_04"}, result("toolu_05", "ENOENT", is_error=True)])]},
         lambda c: [m["content"] for m in _msgs(c, "tool")] == ["", "Error: ENOENT"]),
    Case("8a", "tool_choice any -> required", {"tools": [READ], "tool_choice": {"type": "any"}, "messages": [u("go")]},
         lambda c: c["tool_choice"] == "required",
         Reply(text=None, tool_calls=(ToolCall("Read", {"file_path": "/a"}, id="call_8a"),)),
         lambda m: m["content"] == [{"type": "tool_use", "id": "call_8a", "name": "Read", "input": {"file_path": "/a"}}] and m["stop_reason"] == "tool_use"),
    Case("8b", "tool_choice tool, parallel disabled", {"tools": [READ, BASH], "tool_choice": {"type": "tool", "name": "Bash", "disable_parallel_tool_use": True}, "messages": [u("go")]},
         lambda c: c["tool_choice"] == {"type": "function", "function": {"name": "Bash"}} and c["parallel_tool_calls"] is False),
    Case("8c", "tool_choice none and auto", {"tools": [READ], "tool_choice": {"type": "none"}, "messages": [u("go")]}, lambda c: c["tool_choice"] == "none"),
    Case("8d", "tool_choice any where required does not exist", {"tools": [READ], "tool_choice": {"type": "any"}, "messages": [u("go")]},
         lambda c: c["tool_choice"] == "auto", options={"preset": "generic", "quirks": {"tool_choice": "no-required"}}),
    Case("9", "tool definitions: no custom type, no $schema", {"tools": [{**READ, "type": "custom"}, BASH], "messages": [u("go")]},
         lambda c: c["tools"][1]["function"]["parameters"] == {"type": "object", "properties": {"command": {"type": "string"}}}),
    Case("9b", "Anthropic server tools are refused clearly", {"tools": [{"type": "web_search_20250305", "name": "web_search"}], "messages": [u("go")]},
         refused="Anthropic-defined tool"),
    Case("10", "tool name over 64 characters, mapped back", {"tools": [{"name": LONG, "input_schema": {"type": "object"}}], "messages": [u("go")]},
         lambda c: len(c["tools"][0]["function"]["name"]) == 64,
         Reply(text=None, tool_calls=(ToolCall(LONG[:55] + "_" + __import__("hashlib").sha256(LONG.encode()).hexdigest()[:8], "{}", id="call_10"),)),
         lambda m: m["content"][0]["name"] == LONG),
    Case("12", "thinking budget -> reasoning_effort", {"thinking": {"type": "enabled", "budget_tokens": 5000}, "messages": [u("think")]},
         lambda c: c["reasoning_effort"] == "medium" and "thinking" not in c, options={"preset": "openai"}),
    Case("12b", "adaptive thinking + effort high (Claude Code)", {"thinking": {"type": "adaptive"}, "output_config": {"effort": "high"}, "messages": [u("think")]},
         lambda c: c["reasoning_effort"] == "high" and "output_config" not in c),
    Case("13", "DeepSeek replays reasoning_content, never a signature",
         {"tools": [BASH], "messages": [u("ls"), a([{"type": "thinking", "thinking": "plan...", "signature": "SIGxyz"}, use("toolu_06", "Bash", {"command": "ls"})]), u([result("toolu_06", "a b")])]},
         lambda c: c["messages"][1]["reasoning_content"] == "plan..." and c["messages"][1]["content"] is None and "SIGxyz" not in json.dumps(c),
         Reply(text="Two files.", reasoning="count them", reasoning_field="reasoning_content"),
         lambda m: m["content"][0] == {"type": "thinking", "thinking": "count them", "signature": ""}, options={"preset": "deepseek"}),
    Case("15", "metadata.user_id is not sent (device ids stay local)", {"metadata": {"user_id": '{"device_id":"abc","session_id":"s"}'}, "messages": [u("hi")]},
         lambda c: "user" not in c and "metadata" not in c),
    Case("16", "sampling and limits", {"max_tokens": 64000, "temperature": 0.7, "top_p": 0.9, "top_k": 40, "stop_sequences": ["\nHuman:"], "messages": [u("hi")]},
         lambda c: c["max_tokens"] == 64000 and c["stop"] == ["\nHuman:"] and "top_k" not in c, options={"preset": "generic"}),
    Case("16b", "max_completion_tokens capped for gpt-4o", {"max_tokens": 64000, "messages": [u("hi")]},
         lambda c: c["max_completion_tokens"] == 16384, options={"preset": "openai"}),
    Case("17", "cache_control removed everywhere", {"system": [{"type": "text", "text": "S", "cache_control": {"type": "ephemeral"}}], "tools": [READ],
                                                     "messages": [u([{"type": "text", "text": "hi", "cache_control": {"type": "ephemeral", "ttl": "1h"}}])]},
         lambda c: "cache_control" not in json.dumps(c)),
    Case("18", "PDF document -> file part", {"messages": [u([{"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0xLjQK"}}, {"type": "text", "text": "summarize"}])]},
         lambda c: c["messages"][0]["content"][0] == {"type": "file", "file": {"filename": "document.pdf", "file_data": "data:application/pdf;base64,JVBERi0xLjQK"}}),
    Case("19", "empty tool name in history", {"tools": [READ], "messages": [u("go"), a([use("toolu_07", "")]), u([result("toolu_07")])]},
         lambda c: c["messages"][1]["tool_calls"][0]["function"]["name"] == "unnamed_tool"),
    Case("20", "a tool_use id repeated in a later turn", {"tools": [READ], "messages": [u("a"), a([use("toolu_08")]), u([result("toolu_08")]), a([use("toolu_08")]), u([result("toolu_08")])]},
         lambda c: len({m["tool_call_id"] for m in _msgs(c, "tool")}) == 2),
    Case("21a", "finish length -> max_tokens", {"messages": [u("write")]}, reply=Reply(text="Once upon", finish_reason="length"), check=lambda m: m["stop_reason"] == "max_tokens"),
    Case("21b", "finish content_filter -> refusal", {"messages": [u("x")]}, reply=Reply(text="I can't", finish_reason="content_filter"), check=lambda m: m["stop_reason"] == "refusal"),
    Case("21c", "vLLM stop sequence", {"stop_sequences": ["\nHuman:"], "messages": [u("x")]}, reply=Reply(text="ok", stop_reason="\nHuman:"),
         check=lambda m: (m["stop_reason"], m["stop_sequence"]) == ("stop_sequence", "\nHuman:"), options={"preset": "vllm"}),
    Case("22", "text and tool calls in one answer", {"tools": [READ], "messages": [u("check")]},
         reply=Reply(text="Let me check.", tool_calls=(ToolCall("Read", {"file_path": "/a"}, id="call_1"),)),
         check=lambda m: [b["type"] for b in m["content"]] == ["text", "tool_use"] and m["stop_reason"] == "tool_use"),
    Case("23", "malformed arguments are repaired", {"tools": [READ], "messages": [u("read")]},
         reply=Reply(text=None, tool_calls=(ToolCall("Read", "{'file_path': '/a.py',}", id="call_23"),), arg_chunks=4),
         check=lambda m: m["content"][0]["input"] == {"file_path": "/a.py"}),
    Case("24", "empty arguments", {"tools": [READ], "messages": [u("read")]}, reply=Reply(text=None, tool_calls=(ToolCall("Read", "", id="call_24"),)),
         check=lambda m: m["content"][0]["input"] == {}),
    Case("25", "tool ids normalised", {"tools": [READ, BASH], "messages": [u("both")]},
         reply=Reply(text=None, tool_calls=(ToolCall("Read", {"file_path": "/a"}, id="functions.Read:0"), ToolCall("Bash", {"command": "ls"}, id="functions.Read:0"))),
         check=lambda m: m["content"][0]["id"] == "functions_Read_0" and m["content"][1]["id"].startswith("toolu_")),
    Case("26", "reasoning -> thinking without a signature", {"messages": [u("think")]}, reply=Reply(text="Answer", reasoning="hmm", reasoning_field="reasoning"),
         check=lambda m: m["content"][0] == {"type": "thinking", "thinking": "hmm", "signature": ""}, options={"preset": "openrouter"}),
    Case("27", "usage with cached tokens", {"messages": [u("hi")]}, reply=Reply(text="hi", prompt_tokens=1000, cached_tokens=800, completion_tokens=50),
         check=lambda m: (m["usage"]["input_tokens"], m["usage"]["cache_read_input_tokens"], m["usage"]["output_tokens"]) == (200, 800, 50)),
    Case("28", "the requested model is echoed", {"messages": [u("hi")]}, reply=Reply(text="hi", model="gpt-5-mini-2026-08-07"), check=lambda m: m["model"] == REQUESTED),
    Case("31", "first tool chunk bundles id, name and arguments", {"tools": [READ], "messages": [u("read")]},
         reply=Reply(text=None, tool_calls=(ToolCall("Read", {"file_path": "/b"}, id="c31"),), wire=Wire(bundle_tool_calls=True)),
         check=lambda m: m["content"][0]["input"] == {"file_path": "/b"}),
    Case("32", "parallel calls with interleaved arguments", {"tools": [READ, BASH], "messages": [u("both")]},
         reply=Reply(text="Both.", tool_calls=(ToolCall("Read", {"file_path": "/北京"}, id="c32a"), ToolCall("Bash", {"command": "ls -la"}, id="c32b")), wire=Wire(interleave_tool_arguments=True)),
         check=lambda m: [b.get("input") for b in m["content"][1:]] == [{"file_path": "/北京"}, {"command": "ls -la"}]),
    Case("33", "the name arrives after the arguments began", {"tools": [READ], "messages": [u("read")]},
         reply=Reply(text=None, tool_calls=(ToolCall("Read", {"file_path": "/c"}, id="c33"),), wire=Wire(name_after_arguments=True)),
         check=lambda m: m["content"][0]["name"] == "Read" and m["content"][0]["input"] == {"file_path": "/c"}),
    Case("34", "content and finish in one chunk", {"messages": [u("x")]}, reply=Reply(text="All done", wire=Wire(content_with_finish=True)),
         check=lambda m: m["content"] == [{"type": "text", "text": "All done"}]),
    Case("35", "reasoning stream then text", {"messages": [u("x")]}, reply=Reply(text="Answer 北京", reasoning="step one, step two"),
         check=lambda m: [b["type"] for b in m["content"]] == ["thinking", "text"], options={"preset": "vllm"}),
    Case("36", "SSE split at every 3 bytes, CRLF, keep-alives", {"messages": [u("x")]},
         reply=Reply(text="Voilà — 北京 ✓", reasoning="ok…", wire=Wire(split_bytes=3, crlf=True, keepalive=True)),
         check=lambda m: m["content"][1]["text"] == "Voilà — 北京 ✓"),
    Case("37", "[DONE] without a finish reason", {"messages": [u("x")]}, reply=Reply(text="fine", wire=Wire(no_finish_reason=True)), check=lambda m: m["stop_reason"] == "end_turn"),
    Case("39", "length inside tool arguments", {"tools": [READ], "messages": [u("write")]},
         reply=Reply(text=None, tool_calls=(ToolCall("Read", '{"file_path": "/a', id="c39"),), finish_reason="length"),
         check=lambda m: m["stop_reason"] == "max_tokens" and m["content"][0]["input"] == {}, same_input=False),
    Case("42", "Groq usage in x_groq, no include_usage", {"messages": [u("x")]}, reply=Reply(text="hi", completion_tokens=7, wire=Wire(usage="x_groq")),
         check=lambda m: m["usage"]["output_tokens"] == 7, options={"preset": "groq", "quirks": {"include_usage": False}}),
    Case("json", "structured output (Claude Code's title call)",
         {"output_config": {"effort": "high", "format": {"type": "json_schema", "schema": {"type": "object", "properties": {"title": {"type": "string"}}, "required": ["title"], "additionalProperties": False}}}, "messages": [u("<session>fix the bug</session>")]},
         lambda c: c["response_format"]["json_schema"]["strict"] is True, Reply(text='{"title": "Fix the bug"}'), lambda m: json.loads(m["content"][0]["text"]) == {"title": "Fix the bug"}),
]  # fmt: skip


def full_body(case: Case) -> dict[str, Any]:
    return {"model": REQUESTED, "max_tokens": 1024, **case.body}


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.n}-{c.name}")
def test_request_translation(case: Case) -> None:
    if case.refused:
        with pytest.raises(InvalidRequest, match=case.refused):
            translate_request(full_body(case), UPSTREAM, case.quirks, False)
        return
    for stream in (False, True):
        chat, _ = translate_request(full_body(case), "gpt-4o" if case.n == "16b" else UPSTREAM, case.quirks, stream)
        validate_chat_request(chat, case.quirks)
        assert case.expect(chat) is not False, json.dumps(chat)[:2000]


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("path", captures.all_captures(), ids=lambda p: p.stem)
def test_captured_claude_code_requests_translate_to_what_chat_completions_accepts(path: Path, preset: str) -> None:
    cap = captures.load(path)
    body = cap.data["body"]
    quirks = quirks_for("capture", "openai-compatible", {"preset": preset})
    chat, _ = translate_request(body, UPSTREAM, quirks, body.get("stream") is True)
    validate_chat_request(chat, quirks)
    assert len(chat.get("tools", [])) == len(body.get("tools", []))
    assert "x-anthropic-billing-header" not in json.dumps(chat)
    assert "cache_control" not in json.dumps(chat)
    # Nothing the user or a tool said is lost on the way.
    sent = "\n".join(_texts(m["content"]) for m in chat["messages"] if m["role"] in ("user", "tool", "system"))
    for m in body["messages"]:
        blocks = [{"type": "text", "text": m["content"]}] if isinstance(m["content"], str) else m["content"]
        for b in blocks:
            said = b.get("text") if b.get("type") == "text" else _texts(b.get("content")) if b.get("type") == "tool_result" else None
            if m["role"] in ("user", "system") and said:
                assert said in sent, said[:200]


def _texts(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "\n".join(p.get("text", "") for p in content or [] if isinstance(p, dict))


# ---------------------------------------------------------------- through a sidecar


@pytest.fixture
async def make_sidecar(hermetic_env: Path) -> AsyncIterator[Callable[[Case], Any]]:
    """Start the fake (validating every request it gets) and a sidecar for a case's options."""
    stack: list[Any] = []

    async def start(case: Case) -> tuple[FakeOpenAI, InProcessSidecar]:
        fake = FakeOpenAI(validate=lambda b: validate_chat_request(b, case.quirks))
        await fake.start()
        stack.append(fake.close)
        opts = "".join(f"{k} = {json.dumps(v)}\n" if not isinstance(v, dict) else f"{k} = {{ {', '.join(f'{kk} = {json.dumps(vv)}' for kk, vv in v.items())} }}\n" for k, v in case.options.items())
        config = (f'[[providers]]\nname = "oa"\ntype = "openai-compatible"\nbase_url = "{fake.base_url}"\n{opts}'
                  f'\n[[routes]]\nname = "all"\nmatch = {{ model = "*" }}\ntargets = [{{ provider = "oa", model = "{UPSTREAM}" }}]\n'
                  '[routing.retry]\nrounds = 0\n')  # fmt: skip
        cm = sidecar_in_process(config, hermetic_env / case.n)
        sc = await cm.__aenter__()
        stack.append(lambda: cm.__aexit__(None, None, None))
        return fake, sc

    yield start
    for close in reversed(stack):
        await close()


def without_ids(msg: anthropic.types.Message, inputs: bool = True) -> dict[str, Any]:
    data = msg.model_dump()
    data["id"] = ""
    for block in data["content"]:
        if block.get("type") == "tool_use":
            block["id"] = block["id"] if not block["id"].startswith("toolu_") else ""
            if not inputs:
                block["input"] = None
    return data


@pytest.mark.parametrize("case", [c for c in CASES if c.reply is not None], ids=lambda c: f"{c.n}-{c.name}")
async def test_response_translation(case: Case, make_sidecar: Callable[[Case], Any]) -> None:
    assert case.reply is not None
    fake, sc = await make_sidecar(case)
    # The fake counts prompt tokens from the body's bytes, which `stream: true` changes.
    reply = case.reply if case.reply.prompt_tokens is not None else dataclasses.replace(case.reply, prompt_tokens=42)
    fake.script(reply, reply)
    client = anthropic.AsyncAnthropic(base_url=sc.url, api_key="sk-ant-conformance", max_retries=0)
    try:
        body = full_body(case)
        kw = dict(body)
        whole = await client.messages.create(**kw)
        assert case.check(whole.model_dump(exclude_none=True)) is not False, whole.model_dump(exclude_none=True)
        async with client.messages.stream(**kw) as stream:
            async for _ in stream:
                pass
            streamed = await stream.get_final_message()
    finally:
        await client.close()
    assert without_ids(streamed, case.same_input) == without_ids(whole, case.same_input)
    assert [b["model"] for b in fake.bodies()] == [UPSTREAM, UPSTREAM]


@pytest.mark.parametrize(
    ("status", "etype", "cls"),
    [(400, "invalid_request_error", anthropic.BadRequestError), (401, "authentication_error", anthropic.AuthenticationError),
     (404, "not_found_error", anthropic.NotFoundError), (429, "rate_limit_error", anthropic.RateLimitError),
     (500, "api_error", anthropic.InternalServerError), (503, "overloaded_error", anthropic.InternalServerError)],
)  # fmt: skip
async def test_43_upstream_errors_reach_the_sdk_as_anthropic_errors(
    make_sidecar: Callable[[Case], Any], status: int, etype: str, cls: type[anthropic.APIStatusError]
) -> None:
    fake, sc = await make_sidecar(Case("43", "errors", {}))
    fake.script(Error(status, message=f"upstream {status}", headers={"retry-after": "3"}), Error(status, message=f"upstream {status}"))
    client = anthropic.AsyncAnthropic(base_url=sc.url, api_key="k", max_retries=0)
    try:
        with pytest.raises(cls) as err:
            await client.messages.create(model=REQUESTED, max_tokens=5, messages=[u("hi")])
        assert err.value.status_code == status
        assert err.value.body == {"type": "error", "error": {"type": etype, "message": f"upstream {status}"}}
        assert err.value.response.headers["retry-after"] == "3"
        with pytest.raises(cls):
            async with client.messages.stream(model=REQUESTED, max_tokens=5, messages=[u("hi")]) as s:
                await s.get_final_message()
    finally:
        await client.close()


async def test_38_a_mid_stream_error_reaches_the_sdk(make_sidecar: Callable[[Case], Any]) -> None:
    fake, sc = await make_sidecar(Case("38", "mid-stream error", {}))
    fake.script(StreamError(after_chunks=3, message="Provider returned error", code=502, reply=Reply(text="one two three four")))
    client = anthropic.AsyncAnthropic(base_url=sc.url, api_key="k", max_retries=0)
    try:
        with pytest.raises(anthropic.APIStatusError, match="Provider returned error"):
            async with client.messages.stream(model=REQUESTED, max_tokens=5, messages=[u("hi")]) as s:
                await s.get_final_message()
    finally:
        await client.close()


async def test_37_a_cut_inside_tool_arguments_is_an_error_not_an_end(make_sidecar: Callable[[Case], Any]) -> None:
    fake, sc = await make_sidecar(Case("37b", "cut", {}))
    fake.script(Reply(text="Running:", tool_calls=(ToolCall("Bash", {"command": "make test"}),), wire=Wire(cut_in_tool_arguments="clean")))
    client = anthropic.AsyncAnthropic(base_url=sc.url, api_key="k", max_retries=0)
    try:
        with pytest.raises((anthropic.APIConnectionError, httpx2.TransportError)):
            async with client.messages.stream(model=REQUESTED, max_tokens=5, messages=[u("hi")], tools=[BASH]) as s:  # type: ignore[list-item]
                await s.get_final_message()
    finally:
        await client.close()


async def test_40_a_client_that_leaves_releases_the_upstream_and_is_metered(make_sidecar: Callable[[Case], Any]) -> None:
    fake, sc = await make_sidecar(Case("40", "disconnect", {}))
    fake.script(Reply(text=" ".join(["word"] * 200), delay=0.02))
    async with aiohttp.ClientSession() as s:
        async with s.post(sc.url + "/v1/messages", json={"model": REQUESTED, "max_tokens": 5, "stream": True, "messages": [u("hi")]}) as r:
            await r.content.readany()  # the first bytes, then leave
    for _ in range(200):
        await sc.app[LEDGER].flush()
        import sqlite_utils

        db = sqlite_utils.Database(sc.paths.db_file)
        rows = list(db.query("select outcome, provider from usage"))
        db.conn.close()
        if rows:
            break
        await asyncio.sleep(0.05)
    assert rows == [{"outcome": "client_closed", "provider": "oa"}]


async def test_41_42_count_tokens_is_local_and_betas_are_consumed(make_sidecar: Callable[[Case], Any]) -> None:
    fake, sc = await make_sidecar(Case("41", "count", {}))
    cap = captures.load("count-tokens")
    async with aiohttp.ClientSession() as s:
        async with s.post(sc.url + "/v1/messages/count_tokens?beta=true", data=cap.body, headers=cap.headers) as r:
            assert r.status == 200
            assert (await r.json())["input_tokens"] > 0
        beta = {"anthropic-beta": "claude-code-20250219,interleaved-thinking-2025-05-14", "anthropic-version": "2023-06-01"}
        async with s.post(sc.url + "/v1/messages", json={"model": REQUESTED, "max_tokens": 5, "messages": [u("hi")]}, headers=beta) as r:
            assert r.status == 200
    [req] = fake.requests  # count_tokens never went upstream
    assert req.header("anthropic-beta") is None and req.header("anthropic-version") is None
