"""The collector's raw-byte reader against a plain SSE parse, on random Anthropic streams.

The collector reads the stream's bytes with shortcuts for the usual shape (whole batches
of `event: NAME` / `data: JSON` blocks); whatever it is handed, the message it assembles
(byte for byte), `complete` and `broken` must be what reading the same bytes event by
event with `SSEReader` and handing each decoded event to `on_event` gives.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sidecar.cache.replay import MAX_MESSAGE_BYTES, MessageCollector
from sidecar.testing.anthropic_sse import collect_by_events

# Text that looks like SSE framing once decoded, escapes, quotes and non-ASCII: what a
# model writes about code. "@" marks where a non-UTF-8 byte may be put in the raw bytes.
_words = st.sampled_from(["word ", "event: ", "data: x", "\n\n", '"', "\\", "é", "日本", "🙂", "{}", "],[", "@", " "])
_text = st.lists(_words, max_size=6).map("".join)


def _encode(data: Any, style: int) -> bytes:
    if style == 0:
        return msgspec.json.encode(data)
    if style == 1:
        return json.dumps(data).encode()  # spaces after separators, \u escapes
    if isinstance(data, dict) and len(data) > 1:
        data = dict(reversed(list(data.items())))  # the "type" key last
    return json.dumps(data, ensure_ascii=False).encode()


@st.composite
def _block(draw: st.DrawFn, index: int) -> list[tuple[str, Any]]:
    """content_block_start, deltas and stop of one block, as (event name, data) pairs."""
    kind = draw(st.sampled_from(["text", "text", "thinking", "tool_use", "citations", "redacted"]))
    out: list[tuple[str, Any]] = []

    def delta(d: dict[str, Any]) -> None:
        out.append(("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d}))

    if kind in ("text", "citations"):
        start: dict[str, Any] = {"type": "text", "text": ""}
        if kind == "citations":
            start["citations"] = []
        out.append(("content_block_start", {"type": "content_block_start", "index": index, "content_block": start}))
        for piece in draw(st.lists(_text, min_size=draw(st.integers(0, 4)), max_size=12)):
            delta({"type": "text_delta", "text": piece})
            if kind == "citations" and draw(st.booleans()):
                delta({"type": "citations_delta", "citation": {"type": "char_location", "cited_text": piece}})
    elif kind == "thinking":
        start = {"type": "thinking", "thinking": "", "signature": ""}
        out.append(("content_block_start", {"type": "content_block_start", "index": index, "content_block": start}))
        for piece in draw(st.lists(_text, max_size=5)):
            delta({"type": "thinking_delta", "thinking": piece})
        for piece in draw(st.lists(st.sampled_from(["EqQB", "Ckg", "ab+/=="]), max_size=2)):
            delta({"type": "signature_delta", "signature": piece})
    elif kind == "tool_use":
        start = {"type": "tool_use", "id": f"toolu_{index}", "name": "Read", "input": {}}
        out.append(("content_block_start", {"type": "content_block_start", "index": index, "content_block": start}))
        args = json.dumps({"file_path": draw(_text), "limit": draw(st.integers(0, 500)), "deep": {"a": [1, None]}})
        cuts = sorted(draw(st.lists(st.integers(0, len(args)), max_size=5)))
        for a, b in zip([0, *cuts], [*cuts, len(args)], strict=True):
            delta({"type": "input_json_delta", "partial_json": args[a:b]})
    else:
        start = {"type": "redacted_thinking", "data": "EmwKAhgB"}
        out.append(("content_block_start", {"type": "content_block_start", "index": index, "content_block": start}))
    out.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    return out


# Events a stream may carry by mistake or from a newer API: each replaces or joins one event.
_ODD: list[tuple[str, Any]] = [
    ("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
    ("content_block_flash", {"type": "content_block_flash", "index": 0}),  # an event type the cache does not know
    ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "mystery_delta", "x": 1}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 9, "delta": {"type": "text_delta", "text": "x"}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": 5}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 0.0, "delta": {"type": "text_delta", "text": "f"}}),
    ("content_block_delta", {"type": "content_block_delta", "index": "0", "delta": {"type": "thinking_delta", "thinking": "s"}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "e", "extra": "@"}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": "{"}}),
    ("message_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "named wrong"}}),
    ("content_block_delta", {"type": "message_stop"}),
    ("message_delta", {"type": "message_delta", "delta": None}),
    ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "max_tokens"}, "usage": 7}),
    ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": "again"}}),
    ("content_block_stop", {"type": "content_block_stop", "index": 0}),
    ("message_stop", {"type": "message_stop"}),
    ("ping", [1, 2]),
    ("ping", "not an object"),
    ("", {"type": "ping"}),
]
# Raw blocks: not JSON, not the usual shape, duplicate keys.
_RAW = [
    b"event: content_block_delta\ndata: not json\n\n",
    b": keep-alive\n\n",
    b"event: ping\ndata:{\"type\": \"ping\"}\n\n",
    b'data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"unnamed"}}\n\n',
    b'event: content_block_delta\ndata: {"type":"content_block_delta",\ndata: "index":0,"delta":{"type":"text_delta","text":"two lines"}}\n\n',
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"index":1,"delta":{"type":"text_delta","text":"dup"}}\n\n',
    b'event: content_block_delta\ndata: {"type":"content_block_delta","type":"ping","index":0,"delta":{"type":"text_delta","text":"t"}}\n\n',
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"a"},"delta":{"type":"thinking_delta","thinking":"b"}}\n\n',
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"\xff\xfe"}}\n\n',
    b'event: message_stop\ndata: {"type":"ping"},{"type":"message_stop"}\n\n',
    b'event: content_block_delta\nid: 4\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"id"}}\n\n',
    b"event: message_stop\n\n",
    b'event: content_block_delta\nfield:{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"no data"}}\n\n',
    b'event: ping\ndata: {"type":"ping"}\nid: 7\nevent: message_stop\ndata: {"type":"message_stop"}\n\n',  # no blank line
    b"\n",
]


@st.composite
def streams(draw: st.DrawFn) -> bytes:
    """The bytes of a random, mostly well-formed Anthropic stream."""
    message = {
        "id": "msg_01X",
        "type": "message",
        "role": "assistant",
        "model": "claude-opus-4-8",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": draw(st.integers(0, 9999)), "output_tokens": 1, "service_tier": "standard"},
    }
    events: list[tuple[str, Any]] = [("message_start", {"type": "message_start", "message": message})]
    for i in range(draw(st.sampled_from([0, 1, 1, 2, 3, 4]))):
        events += draw(_block(i))
    stop = draw(st.sampled_from(["end_turn", "tool_use", "max_tokens", "stop_sequence"]))
    events.append(("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None}, "usage": {"output_tokens": 40}}))
    events.append(("message_stop", {"type": "message_stop"}))
    for _ in range(draw(st.integers(0, 3))):
        events.insert(draw(st.integers(1, len(events))), ("ping", {"type": "ping"}))
    starts = [i for i, (name, _) in enumerate(events) if name == "content_block_start"]
    if starts and draw(st.integers(0, 5)) == 0:  # a block started again, later on
        i = draw(st.sampled_from(starts))
        events.insert(draw(st.integers(i + 1, len(events))), events[i])
    raws: list[bytes] = []
    for name, data in events:
        payload = _encode(data, draw(st.sampled_from([0, 0, 0, 1, 2])))
        raws.append(b"event: " + name.encode() + b"\ndata: " + payload + b"\n\n")
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2]))):  # odd events, put anywhere
        at = draw(st.integers(0, len(raws)))
        if draw(st.booleans()):
            name, data = draw(st.sampled_from(_ODD))
            raw = b"event: " + name.encode() + b"\ndata: " + _encode(data, draw(st.sampled_from([0, 1, 2]))) + b"\n\n"
        else:
            raw = draw(st.sampled_from(_RAW))
        if draw(st.booleans()):
            raws.insert(at, raw)
        elif at < len(raws):
            raws[at] = raw
    if draw(st.integers(0, 4)) == 0:  # a non-UTF-8 byte where a text had "@"
        at = draw(st.integers(0, len(raws) - 1))
        raws[at] = raws[at].replace(b"@", b"\xff", 1)
    if draw(st.integers(0, 5)) == 0:  # more than one blank line after an event
        at = draw(st.integers(0, len(raws) - 1))
        raws[at] += b"\n" * draw(st.integers(1, 3))
    if draw(st.integers(0, 8)) == 0:  # cut short
        raws = raws[: draw(st.integers(0, len(raws)))]
    raw = b"".join(raws)
    if draw(st.integers(0, 6)) == 0:  # the last event without its blank line
        raw = raw.rstrip(b"\n")
    line_end = draw(st.sampled_from([b"\n"] * 8 + [b"\r\n", b"\r"]))
    if line_end != b"\n":
        if draw(st.booleans()):
            raw = raw.replace(b"\n", line_end)
        else:  # from some point on
            at = draw(st.integers(0, len(raw)))
            raw = raw[:at] + raw[at:].replace(b"\n", line_end)
    return raw


def cut(raw: bytes, offsets: list[int]) -> list[bytes]:
    """`raw` in chunks at the given offsets (any byte, inside an event, a CRLF or a character)."""
    points = sorted({o % (len(raw) + 1) for o in offsets})
    return [raw[a:b] for a, b in zip([0, *points], [*points, len(raw)], strict=True)]


def by_bytes(chunks: list[bytes], limit: int, complete: bool, parse_every: int) -> MessageCollector:
    """What the relay does with a passive collector: the raw bytes, as they come."""
    col = MessageCollector(limit)
    col.PARSE_EVERY = parse_every  # small values: batches end anywhere in the stream
    for chunk in chunks:
        col.on_bytes(chunk)
    col.on_end(complete)
    return col


def outcome(col: MessageCollector) -> tuple[bytes, bool, str | None]:
    """What the cache acts on, with the message as bytes (key order counts)."""
    return msgspec.json.encode(col.message), col.complete, col.broken


_START = b'event: message_start\ndata: {"type":"message_start","message":{"content":[]}}\n\n'
_TEXT0 = b'event: content_block_start\ndata: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}\n\n'
_END = b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\nevent: message_stop\ndata: {"type":"message_stop"}\n\n'


def _text_delta(text: str, index: int = 0, name: str = "content_block_delta") -> bytes:
    data = {"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": text}}
    return b"event: " + name.encode() + b"\ndata: " + msgspec.json.encode(data) + b"\n\n"


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(
    streams(),
    st.lists(st.integers(0, 1 << 20), max_size=40),
    st.sampled_from([MAX_MESSAGE_BYTES] * 3 + [0, 10, 30, 100, 300]),
    st.sampled_from([MessageCollector.PARSE_EVERY] * 3 + [1, 64, 300, 2000]),
    st.sampled_from([True, True, True, False]),
)
# Each of the reader's checks, one stream that needs it (the random ones find them too, less surely).
@example(  # the answer breaks in one batch; the last event (no blank line after it) comes in the next
    raw=_START + _TEXT0 + _text_delta("x") + _text_delta("y", index=1).rstrip(b"\n"),
    offsets=[], limit=0, parse_every=1, complete=True,
)
@example(  # an event named other than its type
    raw=_START + _TEXT0 + _text_delta("x") + _text_delta("y", index=9, name="message_delta") + _END,
    offsets=[], limit=MAX_MESSAGE_BYTES, parse_every=MessageCollector.PARSE_EVERY, complete=True,
)
@example(  # a block started again between pieces of its text
    raw=_START + _TEXT0 + _text_delta("x") + _text_delta("y") + _TEXT0 + _text_delta("z") + _END,
    offsets=[], limit=MAX_MESSAGE_BYTES, parse_every=MessageCollector.PARSE_EVERY, complete=True,
)
@example(  # a line in place of the data line
    raw=_START + _TEXT0 + _text_delta("x") + _text_delta("y").replace(b"\ndata: ", b"\nfield:") + _END,
    offsets=[], limit=MAX_MESSAGE_BYTES, parse_every=MessageCollector.PARSE_EVERY, complete=True,
)
@example(  # two events without a blank line between them
    raw=_START + _TEXT0 + _text_delta("x") + _END.replace(b"\n\nevent: message_stop", b"\nid: 7\nevent: message_stop"),
    offsets=[], limit=MAX_MESSAGE_BYTES, parse_every=MessageCollector.PARSE_EVERY, complete=True,
)
@example(  # the size limit passed by the second piece of a text
    raw=_START + _TEXT0 + _text_delta("abc") + _text_delta("def") + _END,
    offsets=[], limit=5, parse_every=MessageCollector.PARSE_EVERY, complete=True,
)
def test_the_raw_reader_collects_what_a_plain_sse_parse_collects(
    raw: bytes, offsets: list[int], limit: int, parse_every: int, complete: bool
) -> None:
    chunks = cut(raw, offsets)
    assert outcome(by_bytes(chunks, limit, complete, parse_every)) == outcome(collect_by_events(chunks, limit, complete))


def test_a_usual_stream_is_collected_whole() -> None:
    """The generator's usual output is stored: the property above is not only about broken streams."""
    blocks = [("text", ["Hello", " world", "@"]), ("thinking", ["hm"])]
    events = [("message_start", {"type": "message_start", "message": {"id": "m", "type": "message", "role": "assistant", "content": [], "usage": {}}})]
    for i, (kind, pieces) in enumerate(blocks):
        events.append(("content_block_start", {"type": "content_block_start", "index": i, "content_block": {"type": kind, kind: ""}}))
        events += [("content_block_delta", {"type": "content_block_delta", "index": i, "delta": {"type": f"{kind}_delta", kind: p}}) for p in pieces]
        events.append(("content_block_stop", {"type": "content_block_stop", "index": i}))
    events += [("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"}}), ("message_stop", {"type": "message_stop"})]
    raw = b"".join(b"event: " + n.encode() + b"\ndata: " + msgspec.json.encode(d) + b"\n\n" for n, d in events)
    col = by_bytes([raw[i : i + 7] for i in range(0, len(raw), 7)], MAX_MESSAGE_BYTES, True, MessageCollector.PARSE_EVERY)
    assert col.complete and col.broken is None and col.message is not None
    assert col.message["content"] == [{"type": "text", "text": "Hello world@"}, {"type": "thinking", "thinking": "hm"}]
    assert outcome(col) == outcome(collect_by_events([raw], MAX_MESSAGE_BYTES, True))
