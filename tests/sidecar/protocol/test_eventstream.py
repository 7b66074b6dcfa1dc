"""AWS event-stream: decoding at any boundaries, every header type, CRC and length checks."""

from __future__ import annotations

import datetime as dt
import struct
import uuid
import zlib

import pytest
from botocore.eventstream import EventStreamBuffer
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.protocol import eventstream as es
from sidecar.protocol.eventstream import EventStreamDecoder, EventStreamError, Header


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for p in points:
        pieces.append(data[last:p])
        last = p
    pieces.append(data[last:])
    return pieces


payloads = st.lists(st.binary(max_size=300), min_size=1, max_size=6)


@settings(max_examples=200, deadline=None)
@given(payloads=payloads, cuts=st.lists(st.integers(min_value=0), max_size=40))
def test_any_chunk_boundaries_give_the_same_messages(payloads: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(es.event("chunk", p) for p in payloads)
    d = EventStreamDecoder()
    got = [m for piece in _split(stream, cuts) for m in d.feed(piece)]
    assert [m.payload for m in got] == payloads
    assert all(m.event_type == "chunk" and m.message_type == "event" for m in got)
    assert not d.partial


@settings(max_examples=100, deadline=None)
@given(payload=st.binary(min_size=1, max_size=200), pos=st.integers(min_value=0), bit=st.integers(0, 7))
def test_any_flipped_bit_is_rejected(payload: bytes, pos: int, bit: int) -> None:
    frame = bytearray(es.event("chunk", payload))
    frame[pos % len(frame)] ^= 1 << bit
    with pytest.raises(EventStreamError):
        es.decode_all(bytes(frame))


def test_every_header_type_round_trips_and_matches_botocore() -> None:
    when = dt.datetime(2026, 11, 28, 12, 0, 1, 123000, tzinfo=dt.UTC)
    ident = uuid.UUID("12345678-1234-5678-1234-567812345678")
    headers = [
        Header("t", True, es.TRUE), Header("f", False, es.FALSE), Header("b", -7, es.BYTE),
        Header("s", -300, es.SHORT), Header("i", 70000, es.INTEGER), Header("l", 2**40, es.LONG),
        Header("raw", b"\x00\x01", es.BYTES), Header("str", "héllo", es.STRING),
        Header("ts", when, es.TIMESTAMP), Header("id", ident, es.UUID),
    ]  # fmt: skip
    frame = es.encode_message(headers, b'{"a":1}')
    (msg,) = es.decode_all(frame)
    assert msg.headers == {"t": True, "f": False, "b": -7, "s": -300, "i": 70000, "l": 2**40,
                           "raw": b"\x00\x01", "str": "héllo", "ts": when, "id": ident}  # fmt: skip
    assert msg.payload == b'{"a":1}'
    buf = EventStreamBuffer()
    buf.add_data(frame)
    (theirs,) = list(buf)
    assert theirs.payload == b'{"a":1}'
    assert theirs.headers["str"] == "héllo" and theirs.headers["l"] == 2**40 and theirs.headers["t"] is True


def test_botocore_frames_decode() -> None:
    # A frame built by hand the way the format describes, checked by botocore first.
    hdr = b"\x0b:event-type\x07\x00\x05chunk"
    payload = b'{"bytes":"e30="}'
    total = 16 + len(hdr) + len(payload)
    prelude = struct.pack(">II", total, len(hdr))
    head = prelude + struct.pack(">I", zlib.crc32(prelude)) + hdr + payload
    frame = head + struct.pack(">I", zlib.crc32(head))
    buf = EventStreamBuffer()
    buf.add_data(frame)
    assert [m.payload for m in buf] == [payload]
    assert es.decode_all(frame)[0].event_type == "chunk"
    assert es.decode_all(frame)[0].payload == payload


def test_exception_messages_are_typed() -> None:
    (msg,) = es.decode_all(es.exception("throttlingException", b'{"message":"slow down"}'))
    assert msg.message_type == "exception" and msg.exception_type == "throttlingException"


def test_bad_prelude_crc_is_rejected_before_the_message_arrives() -> None:
    frame = bytearray(es.event("chunk", b"x" * 50))
    frame[9] ^= 0x01  # inside the prelude CRC
    with pytest.raises(EventStreamError, match="prelude CRC"):
        EventStreamDecoder().feed(bytes(frame[:12]))


def test_impossible_lengths_are_rejected() -> None:
    prelude = struct.pack(">II", 10, 0)  # shorter than the 16-byte overhead
    with pytest.raises(EventStreamError, match="impossible"):
        EventStreamDecoder().feed(prelude + struct.pack(">I", zlib.crc32(prelude)))


def test_a_truncated_stream_is_partial() -> None:
    frame = es.event("chunk", b"hello")
    d = EventStreamDecoder()
    assert d.feed(frame + frame[:7]) and d.partial
    with pytest.raises(EventStreamError, match="ends inside"):
        es.decode_all(frame + frame[:7])


def test_unknown_header_type_is_rejected() -> None:
    hdr = b"\x01x\x0a"
    prelude = struct.pack(">II", 16 + len(hdr), len(hdr))
    head = prelude + struct.pack(">I", zlib.crc32(prelude)) + hdr
    with pytest.raises(EventStreamError, match="unknown value type"):
        es.decode_all(head + struct.pack(">I", zlib.crc32(head)))


def test_good_messages_before_a_corrupted_one_are_kept() -> None:
    good = es.event("chunk", b"one") + es.event("chunk", b"two")
    bad = bytearray(es.event("chunk", b"three"))
    bad[-6] ^= 0x40
    d = EventStreamDecoder()
    assert [m.payload for m in d.feed(good + bytes(bad))] == [b"one", b"two"]
    assert d.partial
    with pytest.raises(EventStreamError, match="message CRC"):
        d.feed(b"")
