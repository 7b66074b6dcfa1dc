"""Gemini answers (whole and streamed) translated to Anthropic messages and events."""

from __future__ import annotations

import itertools
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.errors import StreamBroken
from sidecar.protocol.anthropic_stream import Event
from sidecar.protocol.gemini import NEXT_SIG, PREV_SIG, THOUGHT_SIG
from sidecar.protocol.gemini_response import (
    StreamTranslator,
    anthropic_usage,
    collect,
    map_error,
    message,
    retry_after,
    stop_reason,
)
from sidecar.protocol.gemini_tools import ToolNames
from sidecar.testing.fake_gemini import (
    Quirks,
    Reply,
    call,
    error_response,
    stream_chunks,
    text,
    thought,
    usage_metadata,
)

MODEL = "claude-opus-4-8"


def answer(*parts: dict[str, Any], finish: str | None = "STOP", usage: dict[str, int] | None = None, **kw: Any) -> dict[str, Any]:
    cand: dict[str, Any] = {"content": {"role": "model", "parts": list(parts)}, "index": 0, **kw}
    if finish:
        cand["finishReason"] = finish
    return {"candidates": [cand], "usageMetadata": usage or {"promptTokenCount": 10, "candidatesTokenCount": 3}}


def whole(obj: dict[str, Any], names: ToolNames | None = None) -> dict[str, Any]:
    return message(msgspec.json.encode(obj), MODEL, names or ToolNames())


def sse_bytes(reply: Reply, prompt: int = 50, crlf: bool = False) -> bytes:
    parts = [dict(p) for p in reply.parts]
    chunks = stream_chunks(reply, parts, usage_metadata(reply, parts, prompt), "gemini-3-pro-preview")
    end = b"\r\n\r\n" if crlf else b"\n\n"
    return b"".join(b"data: " + msgspec.json.encode(c) + end for c in chunks)


def run_stream(data: bytes, cuts: list[int] | None = None, names: ToolNames | None = None) -> list[Event]:
    tr = StreamTranslator(MODEL, names or ToolNames())
    out: list[Event] = []
    bounds = [0, *sorted(set(cuts or [])), len(data)]
    for a, b in itertools.pairwise(bounds):
        out.extend(tr.feed(data[a:b]))
    out.extend(tr.end())
    return out


def normalized(events: list[Event]) -> list[Event]:
    """Events with the random ids replaced, so two translations can be compared."""
    out = []
    for name, data in events:
        data = msgspec.json.decode(msgspec.json.encode(data))
        if name == "message_start":
            data["message"]["id"] = "msg"
        if name == "content_block_start" and data["content_block"].get("type") == "tool_use":
            data["content_block"]["id"] = "toolu"
        out.append((name, data))
    return out


def check_sequence(events: list[Event]) -> None:
    """The invariants clients rely on: one start and stop, deltas only inside open blocks."""
    names = [n for n, _ in events]
    assert names[0] == "message_start" and names.count("message_start") == 1
    assert names[-1] == "message_stop" and names.count("message_stop") == 1
    open_index: int | None = None
    expected = 0
    for name, data in events:
        if name == "content_block_start":
            assert open_index is None and data["index"] == expected
            open_index = data["index"]
        elif name == "content_block_delta":
            assert data["index"] == open_index
        elif name == "content_block_stop":
            assert data["index"] == open_index
            open_index, expected = None, expected + 1


def test_usage_subtracts_cached_tokens_and_adds_thoughts() -> None:
    meta = {"promptTokenCount": 1000, "cachedContentTokenCount": 800, "candidatesTokenCount": 50, "thoughtsTokenCount": 20, "toolUsePromptTokenCount": 5}
    assert anthropic_usage(meta) == {"input_tokens": 205, "cache_read_input_tokens": 800, "output_tokens": 70}
    msg = whole(answer(text("hi"), usage=meta))
    assert msg["usage"] == {"input_tokens": 205, "cache_read_input_tokens": 800, "cache_creation_input_tokens": 0, "output_tokens": 70}


@pytest.mark.parametrize(
    ("finish", "calls", "stop"),
    [("STOP", 0, "end_turn"), ("STOP", 1, "tool_use"), ("MAX_TOKENS", 1, "max_tokens"), ("SAFETY", 0, "refusal"),
     ("RECITATION", 0, "refusal"), ("PROHIBITED_CONTENT", 0, "refusal"), ("OTHER", 0, "end_turn"), ("FINISH_REASON_UNSPECIFIED", 0, "end_turn")],
)  # fmt: skip
def test_stop_reasons(finish: str, calls: int, stop: str) -> None:
    assert stop_reason(finish, calls) == stop


def test_thoughts_text_and_calls_with_their_signatures() -> None:
    names = ToolNames()
    long_name = "mcp__server__" + "x" * 60
    alias = names.alias(long_name)
    msg = whole(
        answer(
            thought("Let me look.", signature="VFNJRw=="),
            thought("Then read."),
            text("Reading both.", signature="UFNJRw=="),
            call(alias, {"p": "/a"}, signature="TlNJRw==", id="call-1"),
            call("Read", {"p": "/b"}, id="call-1"),
            call("Read", {}),
        ),
        names,
    )
    blocks = msg["content"]
    assert [b["type"] for b in blocks] == ["thinking", "thinking", "text", "thinking", "thinking", "tool_use", "tool_use", "tool_use"]
    assert blocks[0] == {"type": "thinking", "thinking": "Let me look.", "signature": THOUGHT_SIG + "VFNJRw=="}
    assert blocks[1] == {"type": "thinking", "thinking": "Then read.", "signature": ""}
    assert blocks[2] == {"type": "text", "text": "Reading both."}
    assert blocks[3] == {"type": "thinking", "thinking": "", "signature": PREV_SIG + "UFNJRw=="}
    assert blocks[4] == {"type": "thinking", "thinking": "", "signature": NEXT_SIG + "TlNJRw=="}
    assert blocks[5] == {"type": "tool_use", "id": "call-1", "name": long_name, "input": {"p": "/a"}}
    assert blocks[6]["id"].startswith("toolu_") and blocks[6]["input"] == {"p": "/b"}  # a repeated id is replaced
    assert blocks[7]["input"] == {}
    assert msg["stop_reason"] == "tool_use" and msg["model"] == MODEL


def test_the_last_texts_signature_is_not_kept_after_the_answer() -> None:
    msg = whole(answer(text("Done.", signature="UFNJRw==")))
    assert msg["content"] == [{"type": "text", "text": "Done."}]


def test_a_blocked_prompt_is_a_refusal_and_failures_are_errors() -> None:
    blocked = whole({"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 7}})
    assert (blocked["content"], blocked["stop_reason"], blocked["usage"]["input_tokens"]) == ([], "refusal", 7)
    with pytest.raises(ValueError, match="MALFORMED_FUNCTION_CALL: bad call"):
        whole(answer(finish="MALFORMED_FUNCTION_CALL", finishMessage="bad call"))
    with pytest.raises(ValueError, match="no candidates"):
        whole({"usageMetadata": {}})
    with pytest.raises(ValueError, match="no finishReason"):
        whole(answer(text("x"), finish=None))


def test_stream_equals_whole_answer() -> None:
    reply = Reply((thought("I will check the weather in Paris.", signature="VFNJRw=="), text("Checking it now."), call("get_weather", {"city": "Paris"}, signature="TlNJRw==")))
    events = run_stream(sse_bytes(reply))
    check_sequence(events)
    parts = [dict(p) for p in reply.parts]
    usage = usage_metadata(reply, parts, 50)
    msg = whole({"candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP"}], "usageMetadata": usage})
    streamed = collect(events)
    for m in (msg, streamed):
        m["id"] = "msg"
        m["content"][-1]["id"] = "toolu"
    assert streamed == msg


def test_parallel_calls_and_content_with_finish_in_one_chunk() -> None:
    reply = Reply((text("Both:"), call("Read", {"p": "/a"}, signature="TlNJRw=="), call("Read", {"p": "/b"})), words_per_chunk=5)
    events = run_stream(sse_bytes(reply))
    check_sequence(events)
    starts = [d["content_block"] for n, d in events if n == "content_block_start"]
    assert [b["type"] for b in starts] == ["text", "thinking", "tool_use", "tool_use"]
    deltas = [d["delta"]["partial_json"] for n, d in events if n == "content_block_delta" and d["delta"]["type"] == "input_json_delta"]
    assert deltas == ['{"p":"/a"}', '{"p":"/b"}']  # each call's arguments whole, in one delta
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"


def test_finish_in_its_own_empty_chunk_and_signature_in_a_trailing_part() -> None:
    reply = Reply((text("Hello there, friend.", signature="UFNJRw=="), call("Bash", {"c": "ls"}, signature="TlNJRw==")), quirks=Quirks(finish_in_own_chunk=True))
    plain = normalized(run_stream(sse_bytes(reply)))
    trailing = Reply(reply.parts, quirks=Quirks(finish_in_own_chunk=True, signature_in_trailing_part=True))
    assert normalized(run_stream(sse_bytes(trailing))) == plain


@settings(max_examples=150, deadline=None)
@given(cuts=st.lists(st.integers(min_value=1, max_value=2000), max_size=12), crlf=st.booleans())
def test_any_chunk_boundaries_give_the_same_events(cuts: list[int], crlf: bool) -> None:
    reply = Reply((thought("Pensons à Zürich — 北京 🚀."), text("Voilà: «北京» ✓ done."), call("Write", {"path": "/tmp/ü.txt", "text": "naïve 🚀"}, signature="TlNJRw==")))
    data = sse_bytes(reply, crlf=crlf)
    whole_events = normalized(run_stream(data))
    check_sequence(whole_events)
    assert normalized(run_stream(data, [c for c in cuts if c < len(data)])) == whole_events


def test_byte_by_byte() -> None:
    data = sse_bytes(Reply((text("Ünïcödé 北京 text"),)))
    assert normalized(run_stream(data, list(range(1, len(data))))) == normalized(run_stream(data))


@pytest.mark.parametrize("parts", [(text("partial answer"),), (call("Bash", {"c": "ls"}),), ()])
def test_a_stream_without_finish_reason_is_broken(parts: tuple[dict[str, Any], ...]) -> None:
    data = sse_bytes(Reply(parts, quirks=Quirks(no_finish=True)))
    with pytest.raises(StreamBroken):
        run_stream(data)


def test_a_mid_stream_error_ends_the_answer_with_an_error_event() -> None:
    tr = StreamTranslator(MODEL, ToolNames())
    events = tr.feed(sse_bytes(Reply((text("Hel"),), finish_reason=None)))
    err = {"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}
    events += tr.feed(b"data: " + msgspec.json.encode(err) + b"\n\n" + sse_bytes(Reply((text("ignored"),))))
    events += tr.end()
    assert events[-1] == ("error", {"type": "error", "error": {"type": "overloaded_error", "message": "The model is overloaded."}})
    assert not any(n == "content_block_delta" and d["delta"].get("text") == "ignored" for n, d in events)


def test_a_malformed_call_in_a_stream_is_an_api_error() -> None:
    events = run_stream(sse_bytes(Reply((text("trying"),), finish_reason="MALFORMED_FUNCTION_CALL", finish_message="Malformed function call: x")))
    assert events[-1] == ("error", {"type": "error", "error": {"type": "api_error", "message": "Gemini stopped with MALFORMED_FUNCTION_CALL: Malformed function call: x"}})


def _error_body(status: int, message: str | None = None, retry_delay: str | None = None, reason: str | None = None) -> bytes:
    return error_response(status, message, retry_delay, reason).body  # type: ignore[return-value]


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (400, _error_body(400, "API key not valid. Please pass a valid API key.", reason="API_KEY_INVALID"), (400, "invalid_request_error", "API key not valid. Please pass a valid API key.")),
        (403, _error_body(403), (403, "permission_error", "The caller does not have permission")),
        (404, _error_body(404, "models/x is not found"), (404, "not_found_error", "models/x is not found")),
        (429, _error_body(429, retry_delay="7s"), (429, "rate_limit_error", "You exceeded your current quota, please check your plan and billing details.")),
        (500, _error_body(500), (500, "api_error", "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting")),
        (503, _error_body(503), (503, "overloaded_error", "The model is overloaded. Please try again later.")),
        (504, _error_body(504), (504, "timeout_error", "The request timed out. Please try again.")),
        (502, b"<html>Bad Gateway</html>", (502, "api_error", "Gemini answered HTTP 502: <html>Bad Gateway</html>")),
        (499, msgspec.json.encode({"error": {"code": 499, "message": "cancelled", "status": "CANCELLED"}}), (499, "api_error", "cancelled")),
    ],
)
def test_error_mapping_keeps_googles_message(status: int, body: bytes, expected: tuple[int, str, str]) -> None:
    assert map_error(status, body) == expected


def test_context_overflow_is_worded_the_way_claude_code_recognises() -> None:
    body = _error_body(400, "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).")
    status, etype, msg = map_error(400, body)
    assert (status, etype) == (400, "invalid_request_error")
    assert msg.startswith("prompt is too long: 1200000 tokens > 1048576 maximum (Gemini: The input token count")


def test_retry_delay_from_retry_info() -> None:
    assert retry_after(_error_body(429, retry_delay="7s")) == 7
    assert retry_after(_error_body(429, retry_delay="0.2s")) == 1
    assert retry_after(_error_body(429)) is None
    assert retry_after(b"not json") is None
