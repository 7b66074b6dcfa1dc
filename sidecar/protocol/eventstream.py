"""AWS event-stream (`application/vnd.amazon.eventstream`): an incremental decoder and an encoder.

Bedrock's streaming APIs (InvokeModelWithResponseStream, ConverseStream) send their body
as a sequence of binary messages::

    total length (u32) | headers length (u32) | prelude CRC32 (u32)
    headers | payload | message CRC32 (u32, over everything before it)

Each header is `name length (u8) | name | type (u8) | value`, the value's shape given by
its type (booleans carry no bytes, integers are big-endian, byte arrays and strings have
a u16 length, timestamps are milliseconds since the epoch, UUIDs are 16 bytes).

The decoder takes bytes at any boundaries and returns each message once it is whole, so
a message split anywhere gives the same messages as one big read. A CRC mismatch or an
impossible length is an `EventStreamError`: a corrupted stream is never half-read.
"""

from __future__ import annotations

import struct
import uuid
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

PRELUDE = 12  # total length, headers length, prelude CRC
OVERHEAD = 16  # the prelude and the message CRC
MAX_MESSAGE = 16 * 1024 * 1024  # the format's own limit on one message
MAX_HEADERS = 128 * 1024

# Header value types (the wire codes).
TRUE, FALSE, BYTE, SHORT, INTEGER, LONG, BYTES, STRING, TIMESTAMP, UUID = range(10)

HeaderValue = bool | int | bytes | str | datetime | uuid.UUID


class EventStreamError(ValueError):
    """The bytes are not a valid event stream (bad CRC, impossible length, unknown type)."""


@dataclass(frozen=True, slots=True)
class Header:
    """One typed header; `type` is the wire code (see TRUE ... UUID)."""

    name: str
    value: HeaderValue
    type: int = STRING


@dataclass(frozen=True, slots=True)
class Message:
    """One decoded message: its headers by name, and the raw payload."""

    headers: dict[str, HeaderValue] = field(default_factory=dict)
    payload: bytes = b""

    @property
    def message_type(self) -> str:
        """`event`, `exception` or `error` (the `:message-type` header)."""
        return str(self.headers.get(":message-type", "event"))

    @property
    def event_type(self) -> str | None:
        """The `:event-type` header of an event (e.g. `chunk`, `contentBlockDelta`)."""
        v = self.headers.get(":event-type")
        return None if v is None else str(v)

    @property
    def exception_type(self) -> str | None:
        """The `:exception-type` header of an exception (e.g. `throttlingException`)."""
        v = self.headers.get(":exception-type")
        return None if v is None else str(v)


# ---------------------------------------------------------------- decoding


_FIXED = {BYTE: ">b", SHORT: ">h", INTEGER: ">i", LONG: ">q", TIMESTAMP: ">q"}


def _read_headers(raw: bytes) -> dict[str, HeaderValue]:
    out: dict[str, HeaderValue] = {}
    pos, end = 0, len(raw)
    while pos < end:
        n = raw[pos]
        pos += 1
        if pos + n + 1 > end:
            raise EventStreamError("a header runs past the headers section")
        name = raw[pos : pos + n].decode("utf-8", errors="replace")
        pos += n
        kind = raw[pos]
        pos += 1
        value: HeaderValue
        if kind in (TRUE, FALSE):
            value = kind == TRUE
        elif kind in _FIXED:
            fmt = _FIXED[kind]
            size = struct.calcsize(fmt)
            if pos + size > end:
                raise EventStreamError(f"header {name!r} runs past the headers section")
            (num,) = struct.unpack_from(fmt, raw, pos)
            pos += size
            value = datetime.fromtimestamp(num / 1000, UTC) if kind == TIMESTAMP else num
        elif kind in (BYTES, STRING):
            if pos + 2 > end:
                raise EventStreamError(f"header {name!r} runs past the headers section")
            (size,) = struct.unpack_from(">H", raw, pos)
            pos += 2
            if pos + size > end:
                raise EventStreamError(f"header {name!r} runs past the headers section")
            chunk = raw[pos : pos + size]
            pos += size
            value = chunk.decode("utf-8", errors="replace") if kind == STRING else bytes(chunk)
        elif kind == UUID:
            if pos + 16 > end:
                raise EventStreamError(f"header {name!r} runs past the headers section")
            value = uuid.UUID(bytes=bytes(raw[pos : pos + 16]))
            pos += 16
        else:
            raise EventStreamError(f"header {name!r} has unknown value type {kind}")
        out[name] = value
    return out


class EventStreamDecoder:
    """Turns event-stream bytes into messages. Feed chunks; get the messages each one completed."""

    __slots__ = ("_buf", "_error")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._error: EventStreamError | None = None

    def feed(self, chunk: bytes) -> list[Message]:
        """Consume `chunk`; return the messages it completed, in order. The good messages
        before a corrupted one are returned first; the error is raised by the next call."""
        if self._error is not None:
            raise self._error
        self._buf += chunk
        out: list[Message] = []
        try:
            return self._decode(out)
        except EventStreamError as e:
            if not out:
                raise
            self._error = e
            return out

    def _decode(self, out: list[Message]) -> list[Message]:
        buf = self._buf
        pos = 0
        try:
            while len(buf) - pos >= PRELUDE:
                total, hlen, crc = struct.unpack_from(">III", buf, pos)
                if zlib.crc32(buf[pos : pos + 8]) != crc:
                    raise EventStreamError("prelude CRC mismatch: the stream is corrupted")
                if total < OVERHEAD or total > MAX_MESSAGE or hlen > MAX_HEADERS or hlen > total - OVERHEAD:
                    raise EventStreamError(f"impossible message lengths (total {total}, headers {hlen})")
                end = pos + total
                if len(buf) < end:
                    break
                (msg_crc,) = struct.unpack_from(">I", buf, end - 4)
                if zlib.crc32(buf[pos : end - 4]) != msg_crc:
                    raise EventStreamError("message CRC mismatch: the stream is corrupted")
                hstart = pos + PRELUDE
                headers = _read_headers(bytes(buf[hstart : hstart + hlen]))
                out.append(Message(headers, bytes(buf[hstart + hlen : end - 4])))
                pos = end
        finally:
            del buf[:pos]  # once per feed: the messages returned are consumed, even before an error
        return out

    @property
    def partial(self) -> bool:
        """True when bytes of an unfinished message are held (a cut here is an error)."""
        return bool(self._buf)


def decode_all(data: bytes) -> list[Message]:
    """Every message of a complete event-stream body (raises on a trailing partial message)."""
    d = EventStreamDecoder()
    out = d.feed(data)
    if d.partial:
        raise EventStreamError("the stream ends inside a message")
    return out


# ---------------------------------------------------------------- encoding


def _header_bytes(h: Header) -> bytes:
    name = h.name.encode()
    if len(name) > 255:
        raise ValueError(f"header name {h.name!r} is longer than 255 bytes")
    head = bytes([len(name)]) + name
    v = h.value
    if h.type in (TRUE, FALSE):
        return head + bytes([TRUE if v else FALSE])
    if h.type in _FIXED:
        if isinstance(v, datetime):
            num = int(v.timestamp() * 1000)
        elif isinstance(v, int):
            num = v
        else:
            raise ValueError(f"header {h.name!r}: type {h.type} needs an int or datetime value")
        return head + bytes([h.type]) + struct.pack(_FIXED[h.type], num)
    if h.type in (BYTES, STRING):
        if not isinstance(v, str | bytes):
            raise ValueError(f"header {h.name!r}: type {h.type} needs a str or bytes value")
        data = v.encode() if isinstance(v, str) else v
        if len(data) > 0xFFFF:
            raise ValueError(f"header {h.name!r} is longer than 65535 bytes")
        return head + bytes([h.type]) + struct.pack(">H", len(data)) + data
    if h.type == UUID:
        if not isinstance(v, uuid.UUID):
            raise ValueError(f"header {h.name!r}: a UUID header needs a uuid.UUID value")
        return head + bytes([UUID]) + v.bytes
    raise ValueError(f"header {h.name!r} has unknown value type {h.type}")


def encode_message(headers: list[Header] | dict[str, str], payload: bytes) -> bytes:
    """One event-stream message; a dict gives string headers."""
    items = [Header(k, v) for k, v in headers.items()] if isinstance(headers, dict) else headers
    hbytes = b"".join(_header_bytes(h) for h in items)
    total = OVERHEAD + len(hbytes) + len(payload)
    prelude = struct.pack(">II", total, len(hbytes))
    head = prelude + struct.pack(">I", zlib.crc32(prelude)) + hbytes + payload
    return head + struct.pack(">I", zlib.crc32(head))


def event(event_type: str, payload: bytes, content_type: str = "application/json") -> bytes:
    """An `event` message as AWS services send them."""
    return encode_message(
        {":event-type": event_type, ":content-type": content_type, ":message-type": "event"}, payload
    )


def exception(exception_type: str, payload: bytes, content_type: str = "application/json") -> bytes:
    """An `exception` message (a modeled error inside a stream, e.g. throttlingException)."""
    return encode_message(
        {":exception-type": exception_type, ":content-type": content_type, ":message-type": "exception"}, payload
    )


def describe(msg: Message) -> dict[str, Any]:
    """A message as a JSON-friendly dict (for logs and test failures)."""
    return {
        "headers": {k: v if isinstance(v, bool | int | str) else str(v) for k, v in msg.headers.items()},
        "payload": msg.payload.decode("utf-8", errors="replace"),
    }
