"""Streamed Chat Completions as Anthropic events: a valid sequence for every wire quirk, the
same events at any byte boundaries, and StreamBroken (never a fake end_turn) when cut."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jiter import from_json

from sidecar.errors import StreamBroken
from sidecar.protocol.openai import ChatStream, ToolNames
from sidecar.protocol.openai.response import parse_arguments
from sidecar.testing.fake_openai import Reply, ToolCall, Wire, frame, stream_chunks

Events = list[tuple[str, dict[str, Any]]]
_DELTA_BLOCK = {"text_delta": "text", "thinking_delta": "thinking", "signature_delta": "thinking", "input_json_delta": "tool_use"}


def accumulate(events: Events) -> dict[str, Any]:
    """Check the Anthropic stream invariants and return the message the events build.

    message_start first and once; blocks indexed 0, 1, ... one open at a time; every delta
    for the open block and of its type, never empty; message_delta then message_stop last
    (or an error event ends the stream)."""
    assert events, "no events"
    assert events[0][0] == "message_start", events[0]
    msg = json.loads(json.dumps(events[0][1]["message"]))
    open_index: int | None = None
    partial: dict[int, str] = {}
    ended = False
    for i, (name, data) in enumerate(events[1:], 1):
        assert not ended, f"event after the end: {name}"
        assert data["type"] == name
        if name == "error":
            assert i == len(events) - 1, "events after an error"
            msg["error"] = data["error"]
            return msg
        if name == "content_block_start":
            assert open_index is None, f"block {data['index']} started while {open_index} is open"
            assert data["index"] == len(msg["content"]), "block indexes must be 0, 1, 2, ..."
            open_index = data["index"]
            msg["content"].append(dict(data["content_block"]))
        elif name == "content_block_delta":
            assert data["index"] == open_index, f"delta for block {data['index']}, open is {open_index}"
            block, delta = msg["content"][open_index], data["delta"]
            assert block["type"] == _DELTA_BLOCK[delta["type"]], (block["type"], delta["type"])
            if delta["type"] == "text_delta":
                assert delta["text"], "empty text delta"
                block["text"] += delta["text"]
            elif delta["type"] == "thinking_delta":
                assert delta["thinking"], "empty thinking delta"
                block["thinking"] += delta["thinking"]
            elif delta["type"] == "signature_delta":
                block["signature"] += delta["signature"]
            else:
                partial[open_index] = partial.get(open_index, "") + delta["partial_json"]
        elif name == "content_block_stop":
            assert data["index"] == open_index, f"stop for block {data['index']}, open is {open_index}"
            open_index = None
        elif name == "message_delta":
            assert open_index is None, "message_delta while a block is open"
            msg["stop_reason"] = data["delta"]["stop_reason"]
            msg["stop_sequence"] = data["delta"].get("stop_sequence")
            msg["usage"].update(data["usage"])
        elif name == "message_stop":
            assert msg["stop_reason"] is not None, "message_stop without message_delta"
            ended = True
        elif name != "ping":
            raise AssertionError(f"unknown event {name}")
    assert ended, "the stream has no message_stop"
    for index, raw in partial.items():
        block = msg["content"][index]
        block["input"] = json.loads(raw) if msg["stop_reason"] != "max_tokens" else raw
    return msg


def body_of(reply: Reply, include_usage: bool = True) -> bytes:
    return b"".join(frame(c, reply.wire) for c in stream_chunks(reply, "gpt-test", b"x" * 400, include_usage))


def translate(data: bytes, pieces: list[bytes] | None = None, names: ToolNames | None = None, stops: list[str] | None = None) -> Events:
    tr = ChatStream("claude-opus-4-8", names or ToolNames(), stops or [], input_estimate=77)
    out: Events = []
    for p in pieces if pieces is not None else [data]:
        out += tr.feed(p)
    return out + tr.end()


def run(reply: Reply, include_usage: bool = True) -> dict[str, Any]:
    return accumulate(translate(body_of(reply, include_usage)))


TWO_CALLS = (ToolCall("Read", {"file_path": "/a/北京.py"}, id="call_a"), ToolCall("Bash", {"command": "ls -la"}, id="call_b"))


def test_canonical_text_stream() -> None:
    events = translate(body_of(Reply(text="Hello there", prompt_tokens=12, completion_tokens=2)))
    assert [n for n, _ in events] == [
        "message_start", "content_block_start", "content_block_delta", "content_block_delta",
        "content_block_stop", "message_delta", "message_stop",
    ]  # fmt: skip
    start = events[0][1]["message"]
    assert start["model"] == "claude-opus-4-8" and start["usage"]["input_tokens"] == 0
    msg = accumulate(events)
    assert msg["content"] == [{"type": "text", "text": "Hello there"}]
    assert msg["stop_reason"] == "end_turn"
    assert (msg["usage"]["input_tokens"], msg["usage"]["output_tokens"]) == (12, 2)


def test_message_delta_waits_for_the_usage_chunk() -> None:
    chunks = stream_chunks(Reply(text="Hi", prompt_tokens=5, completion_tokens=1), "m", b"", True)
    tr = ChatStream("claude", ToolNames(), [])
    before_usage = [e for c in chunks[:-2] for e in tr.feed(frame(c, Wire()))]
    assert "message_delta" not in [n for n, _ in before_usage]
    rest = tr.feed(frame(chunks[-2], Wire())) + tr.feed(frame(chunks[-1], Wire())) + tr.end()
    assert [n for n, _ in rest] == ["content_block_stop", "message_delta", "message_stop"]
    assert rest[1][1]["usage"]["output_tokens"] == 1


def test_text_then_tool_call_then_parallel_call() -> None:
    msg = run(Reply(text="Let me look.", tool_calls=TWO_CALLS))
    assert [b["type"] for b in msg["content"]] == ["text", "tool_use", "tool_use"]
    assert msg["content"][1] == {"type": "tool_use", "id": "call_a", "name": "Read", "input": {"file_path": "/a/北京.py"}}
    assert msg["content"][2]["input"] == {"command": "ls -la"}
    assert msg["stop_reason"] == "tool_use"


@pytest.mark.parametrize(
    "wire",
    [
        Wire(),
        Wire(interleave_tool_arguments=True),
        Wire(bundle_tool_calls=True),
        Wire(name_after_arguments=True),
        Wire(content_with_finish=True),
        Wire(crlf=True, keepalive=True),
        Wire(split_bytes=1),
        Wire(split_bytes=7, crlf=True),
        Wire(usage="x_groq"),
        Wire(no_done=True),
    ],
    ids=lambda w: ",".join(f"{k}={v}" for k, v in vars(w).items() if v != getattr(Wire(), k)) or "plain",
)
def test_every_wire_quirk_gives_the_same_message(wire: Wire) -> None:
    reply = Reply(text="Checking 北京 files.", reasoning="I should list them.", tool_calls=TWO_CALLS, prompt_tokens=300, cached_tokens=100, completion_tokens=20, wire=wire)
    data = body_of(reply)
    pieces = [data[i : i + wire.split_bytes] for i in range(0, len(data), wire.split_bytes)] if wire.split_bytes else None
    msg = accumulate(translate(data, pieces))
    assert msg["content"] == [
        {"type": "thinking", "thinking": "I should list them.", "signature": ""},
        {"type": "text", "text": "Checking 北京 files."},
        {"type": "tool_use", "id": "call_a", "name": "Read", "input": {"file_path": "/a/北京.py"}},
        {"type": "tool_use", "id": "call_b", "name": "Bash", "input": {"command": "ls -la"}},
    ]
    assert msg["stop_reason"] == "tool_use"
    assert (msg["usage"]["input_tokens"], msg["usage"]["cache_read_input_tokens"], msg["usage"]["output_tokens"]) == (200, 100, 20)


def test_content_and_finish_in_one_chunk_keeps_the_content() -> None:
    chunk = {"choices": [{"index": 0, "delta": {"content": "All done"}, "finish_reason": "stop"}]}
    data = frame(chunk, Wire()) + frame("[DONE]", Wire())
    msg = accumulate(translate(data))
    assert msg["content"] == [{"type": "text", "text": "All done"}] and msg["stop_reason"] == "end_turn"


def test_empty_deltas_open_no_block() -> None:
    chunks = [
        {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
        {"choices": [{"index": 0, "delta": {"reasoning_content": ""}}]},
        {"choices": [{"index": 0, "delta": {"content": None}}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        "[DONE]",
    ]
    msg = accumulate(translate(b"".join(frame(c, Wire()) for c in chunks)))
    assert msg["content"] == [] and msg["stop_reason"] == "end_turn"


def test_the_first_tool_chunk_may_bundle_the_whole_call() -> None:
    chunks = [
        {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "Read", "arguments": '{"file_path":"/a"}'}}]}}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
        "[DONE]",
    ]
    events = translate(b"".join(frame(c, Wire()) for c in chunks))
    deltas = [d for n, d in events if n == "content_block_delta"]
    assert len(deltas) == 1 and deltas[0]["delta"]["partial_json"] == '{"file_path":"/a"}'
    assert accumulate(events)["content"][0]["input"] == {"file_path": "/a"}


def test_a_long_tool_name_is_mapped_back_in_the_stream() -> None:
    names = ToolNames()
    long = "mcp__server__" + "t" * 60
    wire = names.add(long)
    msg = accumulate(translate(body_of(Reply(text=None, tool_calls=(ToolCall(wire, "{}"),))), names=names))
    assert msg["content"][0]["name"] == long


def test_numeric_ids_are_replaced() -> None:
    msg = run(Reply(text=None, tool_calls=TWO_CALLS, wire=Wire(numeric_tool_ids=True)))
    ids = [b["id"] for b in msg["content"]]
    assert all(i.startswith("toolu_") for i in ids) and len(set(ids)) == 2


def test_length_inside_tool_arguments_is_max_tokens_with_the_partial_json() -> None:
    chunks = [
        {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "Write", "arguments": ""}}]}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '{"content": "abc'}}]}}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]},
        "[DONE]",
    ]
    msg = accumulate(translate(b"".join(frame(c, Wire()) for c in chunks)))
    assert msg["stop_reason"] == "max_tokens"
    assert msg["content"][0]["input"] == '{"content": "abc'  # passed on untouched, not repaired


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ("{'path': 'a.py'}", {"path": "a.py"}),
        ('{"path": "a.py",}', {"path": "a.py"}),
        ('{"path": "a.py"', {"path": "a.py"}),
        ('{"cmd": "ls", "n": [1, 2', {"cmd": "ls", "n": [1, 2]}),
        ('{"a": 1, "b', {"a": 1}),
        ('{"a": 1} trailing words', {"a": 1}),
    ],
)
def test_broken_arguments_stream_only_as_valid_json_and_are_repaired(args: str, expected: dict[str, Any]) -> None:
    events = translate(body_of(Reply(text=None, tool_calls=(ToolCall("Read", args, id="c1"),), arg_chunks=5)))
    sent = ""
    for name, data in events:
        if name == "content_block_delta":
            sent += data["delta"]["partial_json"]
            assert from_json(sent.encode(), partial_mode=True) is not None  # what a client parses as it goes
    msg = accumulate(events)  # parses the whole arguments strictly
    assert msg["content"][0]["input"] == expected
    assert msg["stop_reason"] == "tool_use"
    assert parse_arguments(args, "Read") == expected  # the same input as a whole answer


def test_no_finish_reason_but_done_is_an_end() -> None:
    assert run(Reply(text="fine", wire=Wire(no_finish_reason=True)))["stop_reason"] == "end_turn"
    calls = run(Reply(text=None, tool_calls=TWO_CALLS, wire=Wire(no_finish_reason=True)))
    assert calls["stop_reason"] == "tool_use" and len(calls["content"]) == 2


@pytest.mark.parametrize("wire", [Wire(cut_in_tool_arguments="clean"), Wire(cut_in_tool_arguments="clean", no_finish_reason=True)])
def test_a_cut_inside_tool_arguments_is_broken(wire: Wire) -> None:
    tr = ChatStream("claude", ToolNames(), [])
    tr.feed(body_of(Reply(text="I'll run it.", tool_calls=TWO_CALLS, wire=wire)))
    with pytest.raises(StreamBroken, match="without a finish reason or \\[DONE\\]"):
        tr.end()


def test_done_without_a_finish_reason_inside_tool_arguments_is_broken() -> None:
    chunks = [
        {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "Bash", "arguments": '{"comm'}}]}}]},
        "[DONE]",
    ]
    tr = ChatStream("claude", ToolNames(), [])
    tr.feed(b"".join(frame(c, Wire()) for c in chunks))
    with pytest.raises(StreamBroken, match="inside the arguments of tool call Bash"):
        tr.end()


def test_a_stream_that_ends_with_nothing_is_broken() -> None:
    with pytest.raises(StreamBroken, match="before sending anything"):
        ChatStream("claude", ToolNames(), []).end()


def test_text_without_finish_or_done_is_broken_not_a_fake_end_turn() -> None:
    tr = ChatStream("claude", ToolNames(), [])
    tr.feed(frame({"choices": [{"index": 0, "delta": {"content": "partial ans"}}]}, Wire()))
    with pytest.raises(StreamBroken):
        tr.end()


def test_a_mid_stream_error_chunk_becomes_an_error_event() -> None:
    chunks = [
        {"choices": [{"index": 0, "delta": {"content": "Hel"}}]},
        {"error": {"message": "Provider returned error", "code": 429}},
        {"choices": [{"index": 0, "delta": {"content": "lo"}}]},
    ]
    events = translate(b"".join(frame(c, Wire()) for c in chunks))
    assert events[-1] == ("error", {"type": "error", "error": {"type": "rate_limit_error", "message": "Provider returned error"}})
    assert accumulate(events)["error"]["type"] == "rate_limit_error"


def test_a_chunk_that_is_not_json_raises() -> None:
    with pytest.raises(ValueError):
        ChatStream("claude", ToolNames(), []).feed(b"data: {not json\n\n")


def test_without_usage_the_output_is_estimated_and_the_input_given() -> None:
    msg = run(Reply(text="one two three four five six seven eight"), include_usage=False)
    assert msg["usage"]["input_tokens"] == 77
    assert msg["usage"]["output_tokens"] == (len("one two three four five six seven eight") + 3) // 4


def test_a_vllm_stop_sequence_is_reported() -> None:
    data = body_of(Reply(text="x", stop_reason="\nHuman:"))
    msg = accumulate(translate(data, stops=["\nHuman:"]))
    assert (msg["stop_reason"], msg["stop_sequence"]) == ("stop_sequence", "\nHuman:")


def test_legacy_function_call_deltas_are_tool_calls() -> None:
    chunks = [
        {"choices": [{"index": 0, "delta": {"function_call": {"name": "Read", "arguments": '{"file_path":'}}}]},
        {"choices": [{"index": 0, "delta": {"function_call": {"arguments": '"/a"}'}}}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "function_call"}]},
        "[DONE]",
    ]
    msg = accumulate(translate(b"".join(frame(c, Wire()) for c in chunks)))
    assert msg["content"][0]["name"] == "Read" and msg["content"][0]["input"] == {"file_path": "/a"}


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_any_byte_boundaries_give_the_same_events(data: st.DataObject) -> None:
    wire = Wire(
        crlf=data.draw(st.booleans()),
        interleave_tool_arguments=data.draw(st.booleans()),
        name_after_arguments=data.draw(st.booleans()),
        content_with_finish=data.draw(st.booleans()),
    )
    reply = Reply(text="Voilà — 北京 ✓", reasoning="ok…", tool_calls=TWO_CALLS, wire=wire)
    body = body_of(reply)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(body)), max_size=40)))
    pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
    whole = translate(body)
    split = translate(body, pieces)
    ignore_ids = [(n, {**d, "message": {**d["message"], "id": ""}} if n == "message_start" else d) for n, d in whole]
    assert [(n, {**d, "message": {**d["message"], "id": ""}} if n == "message_start" else d) for n, d in split] == ignore_ids
    accumulate(split)
