"""Collecting an answer from the stream, what may be stored and served, and replays."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.cache.replay import MessageCollector, fresh, replay_body, semantic_view, unstorable
from sidecar.protocol.sse import iter_events
from sidecar.testing import anthropic_sse as sse

USAGE = sse.Usage(input_tokens=1200, output_tokens=40, cache_read_input_tokens=3000)
TEXT = sse.text_block("The function parses ISO dates and returns a datetime.")
THINKING = sse.thinking_block("The user asks about parse_date; read it first.")
TOOL = sse.tool_use_block("toolu_01ABC", "Read", {"file_path": "/repo/a.py", "limit": 200})
BASH = sse.tool_use_block("toolu_01DEF", "Bash", {"command": "rm -rf build"})


def stream(blocks: list[sse.Block], stop_reason: str = "end_turn") -> bytes:
    events = sse.stream_events("msg_01X", "claude-opus-4-8", sse.content_events(blocks), USAGE, stop_reason)
    return b"".join(events)


def collect(raw: bytes, complete: bool = True) -> MessageCollector:
    col = MessageCollector()
    for ev in iter_events(raw):
        data = ev.json()
        assert col.on_event(ev.event, data) == [(ev.event, data)]  # passed on unchanged
    col.on_end(complete)
    return col


def test_a_stream_is_collected_into_the_message_a_non_streaming_call_returns() -> None:
    blocks = [THINKING, TEXT, TOOL]
    col = collect(stream(blocks, "tool_use"))
    assert col.complete and col.broken is None
    expected = sse.message_body("msg_01X", "claude-opus-4-8", blocks, USAGE, "tool_use")
    got = col.message
    assert got is not None
    assert got["content"] == expected["content"]
    assert got["stop_reason"] == "tool_use"
    assert got["usage"]["output_tokens"] == 40 and got["usage"]["cache_read_input_tokens"] == 3000


def test_a_whole_message_is_taken_as_is() -> None:
    msg = sse.message_body("msg_01X", "claude-opus-4-8", [TEXT], USAGE, "end_turn")
    col = MessageCollector()
    assert col.on_message(msg) is msg
    col.on_end(True)
    assert col.complete and col.message == msg


@pytest.mark.parametrize(
    ("raw", "complete"),
    [
        (b"".join(sse.stream_events("m", "x", sse.content_events([TEXT]), USAGE, "end_turn")[:-1]), True),  # no message_stop
        (b"".join(sse.stream_events("m", "x", sse.content_events([TEXT]), USAGE, "end_turn")[:4]), True),  # cut mid-block
        (stream([TEXT]), False),  # the relay saw the stream end badly
        (b"".join([*sse.stream_events("m", "x", sse.content_events([TEXT]), USAGE, "end_turn")[:-2],
                   sse.error_event("overloaded_error", "Overloaded")]), True),
    ],
)  # fmt: skip
def test_partial_and_errored_streams_are_not_complete(raw: bytes, complete: bool) -> None:
    assert not collect(raw, complete).complete


def test_an_error_body_is_not_a_message() -> None:
    col = MessageCollector()
    col.on_message({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    col.on_end(True)
    assert not col.complete


def test_an_oversized_answer_is_not_collected() -> None:
    col = MessageCollector(limit=20)
    for ev in iter_events(stream([TEXT])):
        col.on_event(ev.event, ev.json())
    col.on_end(True)
    assert not col.complete and "larger than" in (col.broken or "")


def message(*blocks: dict[str, Any], stop_reason: str = "end_turn") -> dict[str, Any]:
    return {"type": "message", "role": "assistant", "model": "m", "content": list(blocks), "stop_reason": stop_reason}


@pytest.mark.parametrize(
    ("msg", "why"),
    [
        (message(TEXT.final, stop_reason="max_tokens"), "stop_reason"),
        (message(TEXT.final, stop_reason="refusal"), "stop_reason"),
        (message(stop_reason="end_turn"), "no content"),
        (message({"type": "server_tool_use", "id": "s", "name": "web_search", "input": {}}), "server_tool_use"),
        (message({"type": "text", "text": "x", "citations": [{"type": "web_search_result_location"}]}), "citations"),
        ({"type": "error"}, "not an assistant message"),
    ],
)
def test_what_is_not_stored(msg: dict[str, Any], why: str) -> None:
    assert why in (unstorable(msg) or "")


def test_what_is_stored() -> None:
    assert unstorable(message(THINKING.final, TEXT.final, TOOL.final, stop_reason="tool_use")) is None


def test_the_semantic_tier_serves_text_and_read_only_calls_without_thinking() -> None:
    ro = ("Read", "Grep")
    text_only = semantic_view(message(THINKING.final, TEXT.final), ro)
    assert text_only is not None and [b["type"] for b in text_only["content"]] == ["text"]
    read = semantic_view(message(TEXT.final, TOOL.final, stop_reason="tool_use"), ro)
    assert read is not None and [b["type"] for b in read["content"]] == ["text", "tool_use"]
    assert semantic_view(message(TEXT.final, BASH.final, stop_reason="tool_use"), ro) is None
    # A tool call's thinking must go back to the API with its result: never dropped, so never served.
    assert semantic_view(message(THINKING.final, TOOL.final, stop_reason="tool_use"), ro) is None
    assert semantic_view(message(THINKING.final), ro) is None


def test_a_replay_has_fresh_ids_and_zero_usage() -> None:
    stored = message(TEXT.final, TOOL.final, stop_reason="tool_use") | {"id": "msg_01X", "usage": USAGE.message_json()}
    a, b = fresh(stored), fresh(stored)
    assert a["id"].startswith("msg_") and a["id"] != b["id"] != "msg_01X"
    assert a["content"][1]["id"].startswith("toolu_") and a["content"][1]["id"] not in (b["content"][1]["id"], "toolu_01ABC")
    assert a["usage"] == {"input_tokens": 0, "output_tokens": 0, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    assert a["content"][0] == TEXT.final and a["content"][1]["input"] == TOOL.final["input"]


@pytest.mark.parametrize("blocks", [[TEXT], [THINKING, TEXT, TOOL], [{"type": "redacted_thinking", "data": "EmwKAhgB"}, TEXT.final]])
def test_a_replayed_stream_collects_back_into_the_stored_message(blocks: list[Any]) -> None:
    finals = [b.final if isinstance(b, sse.Block) else b for b in blocks]
    stored = message(*finals) | {"id": "msg_01X", "usage": USAGE.message_json()}
    raw, ctype = replay_body(stored, stream=True)
    assert ctype.startswith("text/event-stream")
    names = [ev.event for ev in iter_events(raw)]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    col = collect(raw)
    assert col.complete and col.message is not None
    assert [{k: v for k, v in b.items() if k != "id"} for b in col.message["content"]] == [
        {k: v for k, v in b.items() if k != "id"} for b in finals
    ]
    body, ctype = replay_body(stored, stream=False)
    assert ctype == "application/json"
    whole = msgspec.json.decode(body)
    assert [b["type"] for b in whole["content"]] == [b["type"] for b in finals]
    assert TEXT.final in whole["content"] and whole["stop_reason"] == "end_turn"


# -- the raw tap: what the relay hands a passive collector instead of parsed events --------

_EVENTS = [
    *(b"event: " + n.encode() + b"\ndata: " + msgspec.json.encode(d) + b"\n\n"
      for ev in sse.stream_events("msg_01X", "claude-opus-4-8", sse.content_events([THINKING, TEXT, TOOL]), USAGE, "tool_use")
      for n, d in [(ev.split(b"\n")[0][7:].decode(), msgspec.json.decode(ev.split(b"\n")[1][6:]))]),
    b'event: content_block_delta\r\ndata: {"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"\\u00e9"}}\r\n\r\n',
    b'event: content_block_delta\ndata:{"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"x"}}\n\n',
    b': keep-alive\n\n',
    b'event: ping\ndata: {"type": "ping"}\n\n',
    b'data: {"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"y"}}\n\n',
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"\xff"}}\n\n',
    b'event: content_block_delta\ndata: [1, 2]\n\n',
    b'event: content_block_delta\ndata: not json\n\n',
    b'event: content_block_delta\ndata: {"type":"content_block_delta",\ndata: "index":1,"delta":{"type":"text_delta","text":"z"}}\n\n',
    b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"busy"}}\n\n',
    b'id: 7\n\n',
    b'\n',
    b'\r',
]


def by_bytes(chunks: list[bytes]) -> MessageCollector:
    col = MessageCollector()
    for chunk in chunks:
        col.on_bytes(chunk)
    col.on_end(True)
    return col


@settings(max_examples=600, deadline=None)
@given(st.lists(st.sampled_from(range(len(_EVENTS))), max_size=40), st.lists(st.integers(1, 400), max_size=30), st.booleans())
def test_the_raw_tap_collects_what_the_parsed_events_collect(picks: list[int], cuts: list[int], whole: bool) -> None:
    good = _EVENTS[: len(_EVENTS) - 14]
    raw = b"".join(good) if whole else b""
    raw += b"".join(_EVENTS[i] for i in picks)
    chunks, at = [], 0
    for n in cuts:
        chunks.append(raw[at : at + n])
        at += n
    chunks.append(raw[at:])
    a, b = sse.collect_by_events(chunks), by_bytes(chunks)
    assert (a.message, a.complete, a.broken) == (b.message, b.complete, b.broken)


def test_the_raw_tap_parses_big_streams_as_they_pass() -> None:
    """An answer is parsed as its bytes pass, a batch at a time: they are never all held."""
    col = MessageCollector()
    raw = stream([sse.text_block("word " * 60_000)])
    for i in range(0, len(raw), 1000):
        col.on_bytes(raw[i : i + 1000])
        assert col.held_bytes() <= 2 * MessageCollector.PARSE_EVERY
    col.on_end(True)
    assert col.complete and col.message is not None


_pieces = st.lists(st.text(max_size=12), max_size=12)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["text", "thinking", "tool_use"]), _pieces, _pieces), min_size=1, max_size=4))
def test_a_stream_of_deltas_collects_into_the_message_it_was_cut_from(blocks: list[tuple[str, list[str], list[str]]]) -> None:
    """Each block's text, thinking and signature is the join of its deltas, however they were
    cut (the pieces are kept per block and joined once, not added one delta at a time)."""
    content: list[dict[str, object]] = []
    events: list[tuple[str, dict[str, object]]] = []
    message = {"id": "msg_1", "type": "message", "role": "assistant", "model": "m", "content": [], "stop_reason": None, "usage": {"input_tokens": 1}}
    events.append(("message_start", {"type": "message_start", "message": message}))
    for i, (kind, a, b) in enumerate(blocks):
        if kind == "tool_use":
            start: dict[str, object] = {"type": "tool_use", "id": f"t{i}", "name": "Read", "input": {}}
            whole = {**start, "input": {"p": "".join(a)}}
            js = msgspec.json.encode({"p": "".join(a)}).decode()
            deltas = [{"type": "input_json_delta", "partial_json": js[k : k + 3]} for k in range(0, len(js), 3)]
        elif kind == "text":
            start, whole = {"type": "text", "text": ""}, {"type": "text", "text": "".join(a)}
            deltas = [{"type": "text_delta", "text": p} for p in a]
        else:
            start = {"type": "thinking", "thinking": "", "signature": ""}
            whole = {"type": "thinking", "thinking": "".join(a), "signature": "".join(b)}
            deltas = [{"type": "thinking_delta", "thinking": p} for p in a] + [{"type": "signature_delta", "signature": p} for p in b]
        content.append(whole)
        events.append(("content_block_start", {"type": "content_block_start", "index": i, "content_block": start}))
        events += [("content_block_delta", {"type": "content_block_delta", "index": i, "delta": d}) for d in deltas]
        events.append(("content_block_stop", {"type": "content_block_stop", "index": i}))
    events.append(("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 2}}))
    events.append(("message_stop", {"type": "message_stop"}))
    raw = b"".join(b"event: " + n.encode() + b"\ndata: " + msgspec.json.encode(d) + b"\n\n" for n, d in events)
    col = by_bytes([raw])
    assert col.complete and col.broken is None
    assert col.message == {**message, "content": content, "stop_reason": "end_turn", "usage": {"input_tokens": 1, "output_tokens": 2}}
