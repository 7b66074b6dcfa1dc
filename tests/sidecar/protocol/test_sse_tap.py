"""The SSE tap reads the same usage whatever the chunk boundaries."""

from __future__ import annotations

import itertools
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.protocol.anthropic import SSETap

EVENTS = [
    ("message_start", {"type": "message_start", "message": {"id": "msg_1", "model": "claude-opus-4-8", "usage": {"input_tokens": 120, "cache_read_input_tokens": 3000, "cache_creation_input_tokens": 40, "output_tokens": 1}}}),
    ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    ("ping", {"type": "ping"}),
    ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "héllo wörld ✓ \n\n event: message_delta"}}),
    ("content_block_stop", {"type": "content_block_stop", "index": 0}),
    ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None}, "usage": {"output_tokens": 57}}),
    ("message_stop", {"type": "message_stop"}),
]


def stream(crlf: bool = False) -> bytes:
    raw = b"".join(f"event: {n}\ndata: {json.dumps(d, ensure_ascii=False)}\n\n".encode() for n, d in EVENTS)
    return raw.replace(b"\n", b"\r\n") if crlf else raw


def check(tap: SSETap) -> None:
    s = tap.summary
    assert (s.usage.input_tokens, s.usage.output_tokens) == (120, 57)
    assert (s.usage.cache_read_tokens, s.usage.cache_write_tokens) == (3000, 40)
    assert s.stop_reason == "end_turn" and s.model == "claude-opus-4-8"
    assert s.started and s.stopped and s.content_blocks_done == 1 and s.error_type is None
    assert s.first_delta_at is not None


@settings(max_examples=300, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=len(stream(True))), max_size=40), crlf=st.booleans())
def test_any_chunking_gives_the_same_summary(cuts: list[int], crlf: bool) -> None:
    raw = stream(crlf)
    points = sorted({c for c in cuts if c <= len(raw)} | {0, len(raw)})
    tap = SSETap()
    for a, b in itertools.pairwise(points):
        tap.feed(raw[a:b])
    check(tap)


def test_byte_by_byte() -> None:
    tap = SSETap()
    for i in range(len(stream())):
        tap.feed(stream()[i : i + 1])
    check(tap)


def test_error_event_is_read() -> None:
    tap = SSETap()
    tap.feed(b'event: message_start\ndata: {"type":"message_start","message":{"usage":{"input_tokens":5}}}\n\n')
    tap.feed(b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n')
    assert tap.summary.error_type == "overloaded_error" and not tap.summary.stopped


def test_garbage_data_is_ignored() -> None:
    tap = SSETap()
    tap.feed(b"event: message_delta\ndata: {not json\n\nevent: message_stop\ndata: []\n\n")
    assert tap.summary.usage.output_tokens == 0
