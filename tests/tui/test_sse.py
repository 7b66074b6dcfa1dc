"""The event-stream parser: events come out whole however the bytes are cut."""

from __future__ import annotations

import pytest

from tui.sse import ServerEvent, SSEParser

STREAM = (
    b"event: hello\ndata: {\"pid\": 1}\n\n"
    b": keepalive\n\n"
    b"id: 7\r\nevent: request\r\ndata: {\"id\": \"a\",\r\ndata:  \"cost_usd\": 0.5}\r\n\r\n"
    b"data: unnamed\rdata: second line\r\r"
    b"event: no-data\n\n"
    b"event: request_started\ndata: {\"id\": \"\xc3\xa9\"}\n\n"
)
EXPECTED = [
    ServerEvent("hello", '{"pid": 1}', None),
    ServerEvent("request", '{"id": "a",\n "cost_usd": 0.5}', "7"),
    ServerEvent("message", "unnamed\nsecond line", "7"),
    ServerEvent("request_started", '{"id": "é"}', "7"),
]


def test_whole_stream() -> None:
    assert SSEParser().feed(STREAM) == EXPECTED


@pytest.mark.parametrize("size", [1, 2, 3, 5, 17])
def test_any_chunking_gives_the_same_events(size: int) -> None:
    parser = SSEParser()
    out: list[ServerEvent] = []
    for i in range(0, len(STREAM), size):
        out += parser.feed(STREAM[i : i + size])
    assert out == EXPECTED


def test_incomplete_event_waits_for_its_blank_line() -> None:
    parser = SSEParser()
    assert parser.feed(b"event: request\ndata: {}\n") == []
    assert parser.feed(b"\n") == [ServerEvent("request", "{}", None)]


def test_json_of_an_event() -> None:
    assert ServerEvent("x", '{"a": [1, 2]}').json() == {"a": [1, 2]}
    with pytest.raises(ValueError):
        ServerEvent("x", "not json").json()
