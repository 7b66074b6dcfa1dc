"""Conformance of the Gemini family: the applicable cases of the 45 in
../shared/research/anchors-litellm-ccr-portkey.md, as one table.

Every case's request is translated and checked by `gemini_validate` (what the Gemini API
accepts: roles alternate, function calls and responses pair by name and count, parts have
one kind, tool schemas stay in the OpenAPI subset, systemInstruction holds text), plus the
case's own expectations on the body. Every case with a scripted answer then runs through
a real sidecar to the fake Gemini, non-streaming and streaming: the official `anthropic`
SDK's stream helper must consume the stream and accumulate the same message as the
non-streaming call (ids aside). Every captured Claude Code request is translated and
validated for three model generations.

Not applicable here, and where they are covered: 13 (DeepSeek's reasoning_content replay;
Gemini's equivalent, the thought signature, is 33), 23 (Gemini sends arguments as JSON
objects, never as a string to repair), 40 (client disconnect: the relay), 44 (tier
mapping: the router), 45 (cache keys: the cache).
"""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import pytest

from sidecar.errors import InvalidRequest
from sidecar.protocol.gemini import (
    NEXT_SIG,
    PREV_SIG,
    SKIP_SIGNATURE,
    THOUGHT_SIG,
    build_count_request,
    build_request,
)
from sidecar.protocol.gemini_tools import ToolNames
from sidecar.testing import captures
from sidecar.testing.fake_gemini import (
    FakeGemini,
    GeminiError,
    Quirks,
    Reply,
    call,
    gemini_config,
    text,
    thought,
)
from sidecar.testing.gemini_validate import validate, validate_count
from sidecar.testing.harness import InProcessSidecar, sidecar_in_process

KEY = "test-gemini-key"
REQUESTED = "claude-opus-4-8"
PRO3 = "gemini-3-pro-preview"
BASH = {"name": "Bash", "description": "Run a command", "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}}
READ = {"name": "Read", "input_schema": {"type": "object", "properties": {"file_path": {"type": "string"}}, "required": ["file_path"]}}
LONG = "mcp__very_long_server_name__and_an_even_longer_tool_name_exceeding_limits"
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
SIG_A, SIG_B, SIG_C = "c2lnLWE=", "c2lnLWI=", "c2lnLWM="


def u(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


def a(content: Any) -> dict[str, Any]:
    return {"role": "assistant", "content": content}


def use(tid: str, name: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"type": "tool_use", "id": tid, "name": name, "input": args if args is not None else {"command": "ls"}}


def result(tid: str, content: Any = "ok", **kw: Any) -> dict[str, Any]:
    return {"type": "tool_result", "tool_use_id": tid, "content": content, **kw}


@dataclass(frozen=True)
class Case:
    """One row: an Anthropic request, what Gemini must be sent, what it answers, what the client gets."""

    id: str
    edge: tuple[int, ...]  # numbers in the 45-case list
    body: dict[str, Any]
    sent: dict[str, Any] = field(default_factory=dict)  # fragment the generateContent body must contain
    reply: Reply | GeminiError | None = None  # None: a request-side case only
    got: dict[str, Any] = field(default_factory=dict)  # fragment the Anthropic message must contain
    refused: str | None = None  # the translation is refused with a 400 naming this
    error: tuple[int, str] | None = None  # the client gets this (status, error type)
    stream_breaks: bool = False  # the stream must not end cleanly
    stream_error: str | None = None  # the stream ends with an in-stream error of this type
    model: str = PRO3
    headers: dict[str, str] = field(default_factory=dict)


CASES = [
    # -- request side ---------------------------------------------------------------------
    Case("system-string", (1,), {"system": "Be terse.", "messages": [u("hi")]},
         sent={"systemInstruction": {"parts": [{"text": "Be terse."}]}, "contents": [{"role": "user", "parts": [{"text": "hi"}]}]}),
    Case("system-blocks-cache-control", (2, 17),
         {"system": [{"type": "text", "text": "A", "cache_control": {"type": "ephemeral"}}, {"type": "text", "text": "B"}],
          "messages": [u([{"type": "text", "text": "hi", "cache_control": {"type": "ephemeral", "ttl": "1h"}}])]},
         sent={"systemInstruction": {"parts": [{"text": "A"}, {"text": "B"}]}, "contents": [{"role": "user", "parts": [{"text": "hi"}]}]}),
    Case("system-message-inside-messages", (1,),
         {"messages": [u("hi"), {"role": "system", "content": "Skills: x"}, a("ok"), u("go")]},
         sent={"contents": [{"role": "user", "parts": [{"text": "hi"}, {"text": "<system-reminder>\nSkills: x\n</system-reminder>"}]},
                            {"role": "model", "parts": [{"text": "ok"}]}, {"role": "user", "parts": [{"text": "go"}]}]}),
    Case("images-base64-and-url", (3,),
         {"messages": [u([{"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
                          {"type": "image", "source": {"type": "url", "url": "https://x.test/y.jpg"}}, {"type": "text", "text": "what?"}])]},
         sent={"contents": [{"role": "user", "parts": [{"inlineData": {"mimeType": "image/png", "data": PNG}},
                                                       {"fileData": {"fileUri": "https://x.test/y.jpg", "mimeType": "image/jpeg"}}, {"text": "what?"}]}]}),
    Case("assistant-text-and-tool-use", (4,),
         {"messages": [u("read"), a([{"type": "text", "text": "Reading."}, use("toolu_01", "Read", {"file_path": "/a.py"})]), u([result("toolu_01")])], "tools": [READ]},
         sent={"contents": [{}, {"role": "model", "parts": [{"text": "Reading."}, {"functionCall": {"name": "Read", "args": {"file_path": "/a.py"}}, "thoughtSignature": SKIP_SIGNATURE}]}, {}]}),
    Case("tool-results-before-text-in-order", (5,),
         {"messages": [u("x"), a([use("toolu_01", "Bash"), use("toolu_02", "Read", {"file_path": "/b"})]),
                       u([result("toolu_01", "ok"), result("toolu_02", [{"type": "text", "text": "42"}]), {"type": "text", "text": "continue"}])], "tools": [BASH, READ]},
         sent={"contents": [{}, {}, {"role": "user", "parts": [{"functionResponse": {"name": "Bash", "response": {"output": "ok"}}},
                                                               {"functionResponse": {"name": "Read", "response": {"output": "42"}}}, {"text": "continue"}]}]}),
    Case("tool-result-text-and-image-one-response", (6,),
         {"messages": [u("x"), a([use("toolu_03", "Bash")]),
                       u([result("toolu_03", [{"type": "text", "text": "screenshot:"}, {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}])])], "tools": [BASH]},
         sent={"contents": [{}, {}, {"role": "user", "parts": [{"functionResponse": {"name": "Bash", "response": {"output": "screenshot:"}}},
                                                               {"inlineData": {"mimeType": "image/png", "data": PNG}}]}]}),
    Case("tool-result-empty-and-error", (7,),
         {"messages": [u("x"), a([use("toolu_04", "Bash"), use("toolu_05", "Read", {"file_path": "/nope"})]),
                       u([{"type": "tool_result", "tool_use_id": "toolu_04"}, result("toolu_05", "ENOENT", is_error=True)])], "tools": [BASH, READ]},
         sent={"contents": [{}, {}, {"parts": [{"functionResponse": {"name": "Bash", "response": {"output": ""}}},
                                               {"functionResponse": {"name": "Read", "response": {"error": "ENOENT"}}}]}]}),
    *[
        Case(f"tool-choice-{name}", (8,), {"messages": [u("x")], "tools": [BASH], "tool_choice": choice}, sent={"toolConfig": {"functionCallingConfig": config}})
        for name, choice, config in (
            ("auto", {"type": "auto", "disable_parallel_tool_use": True}, {"mode": "AUTO"}),
            ("any", {"type": "any"}, {"mode": "ANY"}),
            ("tool", {"type": "tool", "name": "Bash"}, {"mode": "ANY", "allowedFunctionNames": ["Bash"]}),
            ("none", {"type": "none"}, {"mode": "NONE"}),
        )
    ],
    Case("tool-definitions-custom-and-web-search", (9,),
         {"messages": [u("x")], "tools": [{**BASH, "type": "custom", "cache_control": {"type": "ephemeral"}}, {"type": "web_search_20250305", "name": "web_search", "max_uses": 3}]},
         sent={"tools": [{"functionDeclarations": [{"name": "Bash", "description": "Run a command",
                                                    "parameters": {"type": "OBJECT", "properties": {"command": {"type": "STRING"}}, "required": ["command"]}}]},
                         {"googleSearch": {}}]}),
    Case("hosted-tool-without-gemini-form", (9,), {"messages": [u("x")], "tools": [{"type": "computer_20250124", "name": "computer", "display_width_px": 1}]},
         refused="server tool 'computer_20250124'"),
    Case("tool-name-over-64", (10,),
         {"messages": [u("x"), a([use("toolu_09", LONG, {})]), u([result("toolu_09")])], "tools": [{"name": LONG, "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}}}]},
         sent={"tools": [{"functionDeclarations": [{"name": LONG[:55] + "_"}]}]}),
    Case("schema-sanitization", (11,),
         {"messages": [u("x")], "tools": [{"name": "Fetch", "input_schema": {
             "$schema": "http://json-schema.org/draft-07/schema#", "type": "object", "additionalProperties": False,
             "properties": {"mode": {"type": ["string", "null"], "enum": ["a", "b"], "default": "a"}, "url": {"type": "string", "format": "uri"}}}}]},
         sent={"tools": [{"functionDeclarations": [{"name": "Fetch", "parameters": {"type": "OBJECT", "properties": {
             "mode": {"type": "STRING", "nullable": True, "enum": ["a", "b"], "format": "enum", "default": "a"},
             "url": {"type": "STRING", "description": "format: uri"}}}}]}]}),
    Case("thinking-budget", (12,), {"messages": [u("x")], "thinking": {"type": "enabled", "budget_tokens": 3000}},
         sent={"generationConfig": {"thinkingConfig": {"includeThoughts": True, "thinkingBudget": 3000}}}, model="gemini-2.5-pro"),
    Case("thinking-adaptive-effort", (12,), {"messages": [u("x")], "thinking": {"type": "adaptive"}, "output_config": {"effort": "low"}},
         sent={"generationConfig": {"thinkingConfig": {"includeThoughts": True, "thinkingLevel": "low"}}}),
    Case("signatures-never-cross", (14, 33),
         {"messages": [u("x"), a([{"type": "thinking", "thinking": "anthropic's", "signature": "EqQBCkYIBxgCKkB"},
                                  {"type": "redacted_thinking", "data": "EmwKAh"},
                                  {"type": "thinking", "thinking": "plan", "signature": THOUGHT_SIG + SIG_A},
                                  {"type": "text", "text": "Checking."}, {"type": "thinking", "thinking": "", "signature": PREV_SIG + SIG_C},
                                  {"type": "thinking", "thinking": "", "signature": NEXT_SIG + SIG_B}, use("toolu_10", "Bash")]),
                       u([result("toolu_10")])], "tools": [BASH]},
         sent={"contents": [{}, {"role": "model", "parts": [{"text": "plan", "thought": True, "thoughtSignature": SIG_A},
                                                            {"text": "Checking.", "thoughtSignature": SIG_C},
                                                            {"functionCall": {"name": "Bash", "args": {"command": "ls"}}, "thoughtSignature": SIG_B}]}, {}]}),
    Case("metadata-user-id-dropped", (15,), {"messages": [u("x")], "metadata": {"user_id": "{\"session_id\":\"9b95\"}"}}, sent={"contents": [{}]}),
    Case("sampling-and-limits", (16,), {"messages": [u("x")], "max_tokens": 32000, "temperature": 1, "top_p": 0.5, "top_k": 5, "stop_sequences": ["\nHuman:"]},
         sent={"generationConfig": {"maxOutputTokens": 32000, "temperature": 1, "topP": 0.5, "topK": 5, "stopSequences": ["\nHuman:"]}}),
    Case("too-many-stop-sequences", (16,), {"messages": [u("x")], "stop_sequences": list("abcdef")}, refused="at most 5 stop sequences"),
    Case("pdf-document", (18,),
         {"messages": [u([{"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0xLjQK"}}, {"type": "text", "text": "sum up"}])]},
         sent={"contents": [{"parts": [{"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0xLjQK"}}, {"text": "sum up"}]}]}),
    Case("empty-tool-name-in-history", (19,), {"messages": [u("x"), a([use("toolu_07", "", {})]), u([result("toolu_07")])]},
         sent={"contents": [{}, {"parts": [{"functionCall": {"name": "unnamed_tool", "args": {}}}]}, {"parts": [{"functionResponse": {"name": "unnamed_tool"}}]}]}),
    Case("duplicate-tool-ids", (20,),
         {"messages": [u("x"), a([use("toolu_08", "Bash")]), u([result("toolu_08")]), a([use("toolu_08", "Read", {"file_path": "/"})]), u([result("toolu_08")])], "tools": [BASH, READ]},
         sent={"contents": [{}, {}, {"parts": [{"functionResponse": {"name": "Bash"}}]}, {}, {"parts": [{"functionResponse": {"name": "Read"}}]}]}),
    Case("file-id-image", (3,), {"messages": [u([{"type": "image", "source": {"type": "file", "file_id": "file_1"}}])]}, refused="file ids"),
    # -- response side ----------------------------------------------------------------------
    Case("text-stream", (28, 29, 34), {"messages": [u("hi")]}, reply=Reply((text("Hello there, how are you today?"),)),
         got={"model": REQUESTED, "role": "assistant", "content": [{"type": "text", "text": "Hello there, how are you today?"}], "stop_reason": "end_turn"}),
    Case("finish-in-own-chunk", (34,), {"messages": [u("hi")]}, reply=Reply((text("All done"),), quirks=Quirks(finish_in_own_chunk=True)),
         got={"content": [{"type": "text", "text": "All done"}], "stop_reason": "end_turn"}),
    Case("max-tokens", (21,), {"messages": [u("hi")]}, reply=Reply((text("cut"),), finish_reason="MAX_TOKENS"), got={"stop_reason": "max_tokens"}),
    Case("safety-refusal", (21,), {"messages": [u("hi")]}, reply=Reply((text("I can't"),), finish_reason="SAFETY"), got={"stop_reason": "refusal"}),
    Case("prompt-blocked", (21,), {"messages": [u("hi")]}, reply=Reply((), block_reason="PROHIBITED_CONTENT"), got={"content": [], "stop_reason": "refusal"}),
    Case("text-then-tool-call", (22, 30, 31, 33), {"messages": [u("read it")], "tools": [READ]},
         reply=Reply((text("Let me check."), call("Read", {"file_path": "/a"}, signature=SIG_A))),
         got={"content": [{"type": "text", "text": "Let me check."}, {"type": "thinking", "thinking": "", "signature": NEXT_SIG + SIG_A},
                          {"type": "tool_use", "name": "Read", "input": {"file_path": "/a"}}], "stop_reason": "tool_use"}),
    Case("signed-text-then-call", (22, 33), {"messages": [u("read it")], "tools": [READ]},
         reply=Reply((text("Checking.", signature=SIG_A), call("Read", {"file_path": "/a"}, signature=SIG_B))),
         got={"content": [{"type": "text", "text": "Checking."}, {"type": "thinking", "thinking": "", "signature": PREV_SIG + SIG_A},
                          {"type": "thinking", "thinking": "", "signature": NEXT_SIG + SIG_B}, {"type": "tool_use", "name": "Read"}]}),
    Case("call-without-args-and-gemini-id", (24, 25), {"messages": [u("x")], "tools": [BASH]},
         reply=Reply((call("Bash", {}, signature=SIG_A, id="fc_1"), call("Bash", {"command": "pwd"}, id="fc_1"))),
         got={"content": [{"type": "thinking"}, {"type": "tool_use", "id": "fc_1", "input": {}}, {"type": "tool_use", "input": {"command": "pwd"}}]}),
    Case("thoughts-then-answer", (26, 35), {"messages": [u("think")], "thinking": {"type": "adaptive"}},
         reply=Reply((thought("First I consider the question carefully.", signature=SIG_A), text("The answer is 42."))),
         got={"content": [{"type": "thinking", "thinking": "First I consider the question carefully.", "signature": THOUGHT_SIG + SIG_A},
                          {"type": "text", "text": "The answer is 42."}]}),
    Case("usage-with-cache", (27,), {"messages": [u("hi")]},
         reply=Reply((text("ok"),), usage={"promptTokenCount": 1000, "cachedContentTokenCount": 800, "candidatesTokenCount": 50, "thoughtsTokenCount": 20}),
         got={"usage": {"input_tokens": 200, "cache_read_input_tokens": 800, "cache_creation_input_tokens": 0, "output_tokens": 70}}),
    Case("parallel-calls", (32,), {"messages": [u("both")], "tools": [READ]},
         reply=Reply((call("Read", {"file_path": "/a"}, signature=SIG_B), call("Read", {"file_path": "/b"}))),
         got={"content": [{"type": "thinking"}, {"type": "tool_use", "input": {"file_path": "/a"}}, {"type": "tool_use", "input": {"file_path": "/b"}}]}),
    Case("long-name-mapped-back", (10,), {"messages": [u("x")], "tools": [{"name": LONG, "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}}}]},
         reply=Reply((call(ToolNames().alias(LONG), {"q": "v"}, signature=SIG_A),)), got={"content": [{}, {"type": "tool_use", "name": LONG, "input": {"q": "v"}}]}),
    Case("utf8-split-anywhere", (36,), {"messages": [u("hi")]}, reply=Reply((text("Grüße aus 北京 🚀 — ok"),), quirks=Quirks(split_bytes=7)),
         got={"content": [{"type": "text", "text": "Grüße aus 北京 🚀 — ok"}]}),
    Case("crlf-framing", (36,), {"messages": [u("hi")]}, reply=Reply((text("line endings"),), quirks=Quirks(crlf=True, split_bytes=3)),
         got={"content": [{"type": "text", "text": "line endings"}]}),
    Case("no-finish-reason", (37,), {"messages": [u("hi")]}, reply=Reply((text("partial answer here"),), quirks=Quirks(no_finish=True)), stream_breaks=True),
    Case("no-finish-after-call", (37,), {"messages": [u("hi")], "tools": [BASH]}, reply=Reply((text("running"), call("Bash", {"command": "ls"})), quirks=Quirks(no_finish=True)),
         stream_breaks=True),
    Case("cut-connection", (37,), {"messages": [u("hi")]}, reply=Reply((text("one two three four five six"),), quirks=Quirks(cut_after_chunks=2)), stream_breaks=True),
    Case("mid-stream-error", (38,), {"messages": [u("hi")]}, reply=Reply((text("one two three four"),), quirks=Quirks(error_after_chunks=1)), stream_error="overloaded_error"),
    Case("max-tokens-during-call", (39,), {"messages": [u("x")], "tools": [BASH]}, reply=Reply((call("Bash", {"command": "echo"}, signature=SIG_C),), finish_reason="MAX_TOKENS"),
         got={"stop_reason": "max_tokens", "content": [{"type": "thinking"}, {"type": "tool_use", "name": "Bash"}]}),
    Case("betas-consumed", (42,), {"messages": [u("hi")]}, reply=Reply(), headers={"anthropic-beta": "context-1m-2025-08-07,interleaved-thinking-2025-05-14"},
         got={"stop_reason": "end_turn"}),
    Case("malformed-function-call", (21,), {"messages": [u("x")], "tools": [BASH]}, reply=Reply((), finish_reason="MALFORMED_FUNCTION_CALL", finish_message="bad"),
         error=(502, "api_error"), stream_error="api_error"),
    *[
        Case(f"error-{status}", (43,), {"messages": [u("hi")]}, reply=GeminiError(status), error=(status, etype))
        for status, etype in ((400, "invalid_request_error"), (403, "permission_error"), (404, "not_found_error"),
                              (429, "rate_limit_error"), (500, "api_error"), (503, "overloaded_error"), (504, "timeout_error"))
    ],
]  # fmt: skip


def full_body(case: Case) -> dict[str, Any]:
    return {"model": REQUESTED, "max_tokens": 1024, **copy.deepcopy(case.body)}


def contains(actual: Any, expected: Any, path: str = "") -> None:
    """`expected` is a fragment of `actual`: dict keys recursively; lists item by item, same length."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{path}: {actual!r} is not an object"
        for k, v in expected.items():
            assert k in actual, f"{path}.{k} missing in {actual!r}"
            contains(actual[k], v, f"{path}.{k}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), f"{path}: {actual!r} vs {expected!r}"
        for i, (x, y) in enumerate(zip(actual, expected, strict=True)):
            contains(x, y, f"{path}[{i}]")
    elif isinstance(expected, str) and expected.endswith("_") and isinstance(actual, str) and path.endswith(".name"):
        assert actual.startswith(expected) and len(actual) == 64, f"{path}: {actual!r}"
    else:
        assert actual == expected, f"{path}: {actual!r} != {expected!r}"


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.id}[{','.join(map(str, c.edge))}]")
def test_request_translation(case: Case) -> None:
    body = full_body(case)
    if case.refused:
        with pytest.raises(InvalidRequest) as e:
            build_request(body, case.model, ToolNames())
        assert case.refused in e.value.message
        return
    out = build_request(body, case.model, ToolNames())
    validate(out)
    contains(out, case.sent)


@pytest.fixture
async def sidecar(hermetic_env: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[FakeGemini, InProcessSidecar]]:
    monkeypatch.setenv("TEST_GEMINI_KEY", KEY)
    async with FakeGemini(api_key=KEY) as fake, sidecar_in_process(gemini_config(fake.url, PRO3), hermetic_env) as sc:
        yield fake, sc


def without_ids(msg: anthropic.types.Message) -> dict[str, Any]:
    out = msg.model_dump(mode="json", exclude_none=True)
    out.pop("id")
    for block in out["content"]:
        if block["type"] == "tool_use" and block["id"].startswith("toolu_"):
            block["id"] = "toolu"
    return out


RESPONSE_CASES = [c for c in CASES if c.reply is not None]


@pytest.mark.parametrize("case", RESPONSE_CASES, ids=lambda c: f"{c.id}[{','.join(map(str, c.edge))}]")
async def test_response_translation(case: Case, sidecar: tuple[FakeGemini, InProcessSidecar]) -> None:
    fake, sc = sidecar
    assert case.reply is not None
    fake.script(case.reply, case.reply)
    body = full_body(case)
    params = {"model": body.pop("model"), "max_tokens": body.pop("max_tokens"), "messages": body.pop("messages")}
    kw: dict[str, Any] = {**params, "extra_body": body, "extra_headers": case.headers}
    client = anthropic.AsyncAnthropic(base_url=sc.url, api_key=sc.token, max_retries=0)
    async with client:
        if case.error is not None:
            with pytest.raises(anthropic.APIStatusError) as e:
                await client.messages.create(**kw)
            assert (e.value.status_code, e.value.body["error"]["type"]) == case.error  # type: ignore[index]
        else:
            msg = await client.messages.create(**kw)
            contains(msg.model_dump(mode="json", exclude_none=True), {"type": "message", "model": REQUESTED, **case.got})
        await _stream(case, client, kw, None if case.error else msg)
    for req in fake.requests:  # what the sidecar sent was what Gemini takes (the fake checked it too)
        validate(req.json())
        assert req.header("anthropic-beta") is None and req.header("x-goog-api-key") == KEY
        assert req.path.startswith(f"/v1beta/models/{PRO3}:")


async def _stream(case: Case, client: anthropic.AsyncAnthropic, kw: dict[str, Any], msg: anthropic.types.Message | None) -> None:
    if case.stream_breaks:
        # The sidecar resets the connection: the SDK sees a transport error, never a clean end.
        with pytest.raises((anthropic.APIConnectionError, httpx2.TransportError)):
            async with client.messages.stream(**kw) as s:
                await s.get_final_message()
        return
    if case.stream_error is not None:
        with pytest.raises(anthropic.APIStatusError) as e:
            async with client.messages.stream(**kw) as s:
                await s.get_final_message()
        assert e.value.status_code == 200  # the error came inside the stream
        assert e.value.body["error"]["type"] == case.stream_error  # type: ignore[index]
        return
    if case.error is not None:
        with pytest.raises(anthropic.APIStatusError) as e:
            async with client.messages.stream(**kw) as s:
                await s.get_final_message()
        assert e.value.status_code == case.error[0]
        return
    assert msg is not None
    async with client.messages.stream(**kw) as s:
        final = await s.get_final_message()
    assert without_ids(final) == without_ids(msg)


@pytest.mark.parametrize("model", [PRO3, "gemini-2.5-flash", "gemini-2.0-flash"])
@pytest.mark.parametrize("path", captures.all_captures(), ids=lambda p: p.stem)
def test_captured_claude_code_requests_translate_to_what_gemini_accepts(path: Path, model: str) -> None:
    cap = captures.load(path)
    body = json.loads(cap.body)
    names = ToolNames()
    if cap.path.endswith("/count_tokens"):
        validate_count(build_count_request(body, model, names))
        return
    out = build_request(body, model, names)
    validate(out)
    client_tools = [t["name"] for t in body.get("tools", [])]
    declared = [d["name"] for t in out.get("tools", []) for d in t.get("functionDeclarations", [])]
    assert [names.original(d) for d in declared] == client_tools
    if model == PRO3:
        assert all("thoughtSignature" in p for c in out["contents"] for p in c["parts"][:1] if "functionCall" in p)
    assert sum(len(c["parts"]) for c in out["contents"]) >= len(body["messages"]) - sum(1 for m in body["messages"] if m["role"] == "system")
