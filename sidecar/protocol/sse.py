"""Server-sent events: an incremental reader that takes bytes at any boundaries, and a writer.

The reader works on bytes and decodes an event only once it is complete, so a UTF-8
character split across two reads, a CRLF split between reads, or an event split anywhere
all give the same events as one big read.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import msgspec


@dataclass(frozen=True, slots=True)
class Event:
    """One server-sent event: `event` is "message" when the stream named none."""

    event: str
    data: str
    id: str | None = None

    def json(self) -> Any:
        """The data field decoded as JSON (raises msgspec.DecodeError when it is not)."""
        return msgspec.json.decode(self.data)


class SSEReader:
    """Turns a byte stream into events. Feed chunks; iterate the events each one completed."""

    __slots__ = ("_buf", "_data", "_event", "_id", "_pending_cr")

    def __init__(self) -> None:
        self._buf = b""
        self._pending_cr = False
        self._event: str | None = None
        self._data: list[str] = []
        self._id: str | None = None

    def feed(self, chunk: bytes) -> list[Event]:
        """Consume `chunk`; return the events it completed, in order."""
        if not chunk:
            return []  # an empty read must not forget a CR that ended the previous one
        if self._pending_cr and chunk.startswith(b"\n"):
            chunk = chunk[1:]  # the LF of a CRLF whose CR ended the previous chunk
        self._pending_cr = chunk.endswith(b"\r")
        buf = self._buf + chunk if self._buf else chunk
        if b"\r" in buf:
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        out: list[Event] = []
        start = 0
        while True:
            end = buf.find(b"\n", start)
            if end < 0:
                break
            ev = self._line(buf[start:end])
            if ev is not None:
                out.append(ev)
            start = end + 1
        self._buf = buf[start:]
        return out

    def close(self) -> list[Event]:
        """End of stream: an event still missing its blank line is dispatched (as browsers do not,
        but upstreams that end on `data: [DONE]` without a blank line exist)."""
        out: list[Event] = []
        if self._buf:
            ev = self._line(self._buf)
            self._buf = b""
            if ev is not None:
                out.append(ev)
        ev = self._line(b"")
        if ev is not None:
            out.append(ev)
        return out

    @property
    def partial(self) -> bool:
        """True when bytes of an unfinished event are held."""
        return bool(self._buf or self._data or self._event is not None)

    def _line(self, raw: bytes) -> Event | None:
        if not raw:
            if not self._data and self._event is None:
                return None
            ev = Event(self._event or "message", "\n".join(self._data), self._id)
            self._event, self._data = None, []
            return ev
        line = raw.decode("utf-8", errors="replace")
        if line.startswith(":"):
            return None  # a comment (keep-alive)
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            self._id = value
        return None  # "retry" and unknown fields are ignored, per the spec


def iter_events(data: bytes) -> Iterator[Event]:
    """Every event in a complete SSE body."""
    r = SSEReader()
    yield from r.feed(data)
    yield from r.close()


def encode(event: str, data: Any) -> bytes:
    """One Anthropic-style SSE event: `event: NAME` and a compact JSON `data:` line."""
    return b"event: " + event.encode() + b"\ndata: " + msgspec.json.encode(data) + b"\n\n"
