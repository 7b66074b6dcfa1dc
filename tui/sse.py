"""An incremental parser for server-sent events (the control API's `/sidecar/v1/events`).

The dashboard never imports the daemon's code, so it reads the stream with this small
parser of the text/event-stream format: `event:`, `data:` (joined by newlines when
repeated), `id:`, comment lines starting with `:`, and events ending at a blank line.
Bytes arrive in arbitrary chunks; a line split across chunks is held until it completes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ServerEvent:
    """One event: its type (`message` when unnamed), its data text and its id."""

    kind: str
    data: str
    id: str | None = None

    def json(self) -> Any:
        """The data parsed as JSON; raises ValueError when it is not JSON."""
        return json.loads(self.data)


class SSEParser:
    """Feed bytes in, get complete events out."""

    def __init__(self) -> None:
        self._buf = b""
        self._kind = ""
        self._data: list[str] = []
        self._id: str | None = None

    def feed(self, chunk: bytes) -> list[ServerEvent]:
        """Parse `chunk` and return the events it completed."""
        buf = self._buf + chunk
        events: list[ServerEvent] = []
        pos = 0
        while (cut := _line_end(buf, pos)) is not None:
            end, skip = cut
            event = self._line(buf[pos:end].decode("utf-8", errors="replace"))
            if event is not None:
                events.append(event)
            pos = end + skip
        self._buf = buf[pos:]
        return events

    def _line(self, line: str) -> ServerEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._kind = value
        elif name == "data":
            self._data.append(value)
        elif name == "id":
            self._id = value
        return None

    def _dispatch(self) -> ServerEvent | None:
        if not self._data:  # the spec drops an event without data lines
            self._kind = ""
            return None
        event = ServerEvent(self._kind or "message", "\n".join(self._data), self._id)
        self._kind, self._data = "", []
        return event


def _line_end(buf: bytes, pos: int) -> tuple[int, int] | None:
    """Where the first complete line from `pos` ends, and the length of its terminator."""
    nl, cr = buf.find(b"\n", pos), buf.find(b"\r", pos)
    if cr == -1 or (nl != -1 and nl < cr):
        return (nl, 1) if nl != -1 else None
    if cr + 1 == len(buf):  # a \r at the end may be the first half of \r\n
        return None
    return cr, 2 if buf[cr + 1] == 0x0A else 1
