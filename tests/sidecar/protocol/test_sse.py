"""The SSE reader: any chunk boundaries give the events of one read; line endings, comments,
multi-line data, ids and the end of the stream are handled as the spec says."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.protocol.sse import Event, SSEReader, encode, iter_events

# Field values never contain CR or LF (they end the line); everything else may appear,
# including multi-byte characters that byte splits cut in half.
_value = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=40)
_name = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12)
_newline = st.sampled_from(["\n", "\r\n", "\r"])


@st.composite
def streams(draw: st.DrawFn) -> tuple[bytes, list[Event]]:
    """An SSE body with a mix of line endings and comments, and the events it holds."""
    body: list[str] = []
    events: list[Event] = []
    last_id: str | None = None
    for _ in range(draw(st.integers(0, 8))):
        nl = draw(_newline)
        if draw(st.booleans()):
            body.append(":" + draw(_value) + nl)  # a comment line (keep-alive)
        name = draw(st.one_of(st.none(), _name))
        if name is not None:
            body.append(f"event: {name}{nl}")
        if draw(st.integers(0, 4)) == 0:
            last_id = draw(_value.filter(lambda v: not v.startswith(" ")))
            body.append(f"id: {last_id}{nl}")
        lines = draw(st.lists(_value, min_size=1, max_size=3))
        values = []
        for line in lines:
            # "data: v" and "data:v" are both allowed; one leading space is not part of the value.
            if draw(st.booleans()):
                body.append(f"data: {line}{nl}")
                values.append(line)
            else:
                body.append(f"data:{line}{nl}")
                values.append(line.removeprefix(" "))
        body.append(nl)
        events.append(Event(name or "message", "\n".join(values), last_id))
    return "".join(body).encode(), events


def read_in_pieces(data: bytes, cuts: list[int]) -> list[Event]:
    reader = SSEReader()
    out: list[Event] = []
    start = 0
    for cut in sorted(cuts):  # repeated cuts feed empty chunks, which must change nothing
        out += reader.feed(data[start:cut])
        start = cut
    out += reader.feed(data[start:])
    out += reader.close()
    return out


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_any_chunk_boundaries_give_the_events_of_one_read(data: st.DataObject) -> None:
    body, _ = data.draw(streams())
    cuts = data.draw(st.lists(st.integers(0, len(body)), max_size=30))
    whole = list(iter_events(body))
    assert read_in_pieces(body, cuts) == whole


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_events_are_read_as_written(data: st.DataObject) -> None:
    body, events = data.draw(streams())
    cuts = data.draw(st.lists(st.integers(0, len(body)), max_size=10))
    assert read_in_pieces(body, cuts) == events


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=20), min_size=1, max_size=5), st.integers(1, 7))
def test_byte_splits_inside_utf8_characters_lose_nothing(texts: list[str], size: int) -> None:
    body = b"".join(encode("message", {"text": t}) for t in texts)
    pieces = [body[i : i + size] for i in range(0, len(body), size)]
    reader = SSEReader()
    got = [e for p in pieces for e in reader.feed(p)] + reader.close()
    assert [e.json()["text"] for e in got] == texts


def test_crlf_split_between_reads_is_one_line_ending() -> None:
    reader = SSEReader()
    assert reader.feed(b"data: a\r") == []
    # The LF completes the CRLF of the data line; the CR alone is the blank line.
    assert reader.feed(b"\n\r") == [Event("message", "a")]
    # This LF belongs to the CR before it, not a second blank line.
    assert reader.feed(b"\ndata: b\r\n\r\n") == [Event("message", "b")]


def test_an_empty_read_between_cr_and_lf_changes_nothing() -> None:
    reader = SSEReader()
    got = reader.feed(b"data: a\r") + reader.feed(b"") + reader.feed(b"\ndata: b\n\n") + reader.close()
    assert got == [Event("message", "a\nb")]


def test_cr_alone_ends_lines() -> None:
    assert list(iter_events(b"event: x\rdata: 1\r\rdata: 2\r\r")) == [Event("x", "1"), Event("message", "2")]


def test_comments_and_unknown_fields_are_ignored() -> None:
    body = b": keep-alive\n\nretry: 100\nfoo: bar\ndata: {}\n\n:ping\n\n"
    assert list(iter_events(body)) == [Event("message", "{}")]


def test_multi_line_data_is_joined_with_newlines() -> None:
    assert list(iter_events(b"data: first\ndata:second\ndata:  third\n\n")) == [Event("message", "first\nsecond\n third")]


def test_an_event_without_its_blank_line_is_dispatched_at_close() -> None:
    reader = SSEReader()
    assert reader.feed(b"data: [DONE]") == []
    assert reader.partial
    assert reader.close() == [Event("message", "[DONE]")]
    assert not reader.partial


def test_the_last_id_carries_over_to_later_events() -> None:
    got = list(iter_events(b"id: 7\ndata: a\n\ndata: b\n\n"))
    assert got == [Event("message", "a", "7"), Event("message", "b", "7")]
