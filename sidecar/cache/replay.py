"""Stored answers: collecting one from the response, deciding whether it may be stored or
served, and replaying it as a message or as an SSE stream.

One stored message serves both kinds of client. A replay gets a fresh message id and fresh
tool-use ids (kept consistent inside the message), and reports zero tokens: nothing was
sent upstream for it. The stream is the Anthropic event sequence: `message_start`, per
block `content_block_start` / deltas / `content_block_stop`, `message_delta`,
`message_stop`.
"""

from __future__ import annotations

from collections.abc import Callable
from operator import itemgetter
from typing import Any, Union

import msgspec

from sidecar.protocol import sse
from sidecar.protocol.anthropic_stream import new_id

Event = tuple[str, dict[str, Any]]
_decode = msgspec.json.decode


# The field of the block each kind of text delta adds to.
_DELTA_FIELDS = {"text_delta": "text", "thinking_delta": "thinking", "signature_delta": "signature"}


# -- the events of a batch, read with one decoder ------------------------------------------
# Each event's data is read into the struct its "type" names, so a text delta (most of a
# stream) needs no dict; the other events are read again as dicts and taken by `on_event`.
# A type not listed here fails the decoder, and the batch goes the per-event way.


class _Text(msgspec.Struct, tag_field="type", tag="text_delta", gc=False):
    text: str


class _Thinking(msgspec.Struct, tag_field="type", tag="thinking_delta", gc=False):
    thinking: str


class _Signature(msgspec.Struct, tag_field="type", tag="signature_delta", gc=False):
    signature: str


class _Json(msgspec.Struct, tag_field="type", tag="input_json_delta", gc=False):
    partial_json: str


class _Citations(msgspec.Struct, tag_field="type", tag="citations_delta", gc=False):
    pass


class _Delta(msgspec.Struct, tag_field="type", tag="content_block_delta", gc=False):
    index: int
    delta: _Text | _Thinking | _Signature | _Json | _Citations


# The other events: read for their type only (their fields are on_event's, from the dict).
_OTHER_TAGS = ("message_start", "content_block_start", "content_block_stop", "message_delta", "message_stop", "ping", "error")
_NAME: dict[type[msgspec.Struct], str] = {
    _Delta: "content_block_delta",
    **{msgspec.defstruct(f"_{tag}", [], tag_field="type", tag=tag, gc=False): tag for tag in _OTHER_TAGS},
}
_event = msgspec.json.Decoder(Union[tuple(_NAME)]).decode  # noqa: UP007 (a union of types made at run time)
_PING = next(t for t, name in _NAME.items() if name == "ping")
# The `event:` line each type must come with (an event named otherwise goes the per-event way).
_LINE = {t: b"event: " + name.encode() for t, name in _NAME.items()}
_after_data = itemgetter(slice(6, None))  # a data line's JSON

STORABLE_STOP_REASONS = ("end_turn", "tool_use", "stop_sequence")
STORABLE_BLOCKS = ("text", "tool_use", "thinking", "redacted_thinking")
MAX_MESSAGE_BYTES = 4 * 1024 * 1024  # larger answers are passed on but not stored
ZERO_USAGE = {"input_tokens": 0, "output_tokens": 0, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}


class MessageCollector:
    """A response filter that rebuilds the final message from a stream (or takes a whole
    one) without changing what the client gets.

    The relay hands it the stream's raw bytes (`on_bytes`) rather than parsed events: they
    are parsed here in batches of PARSE_EVERY bytes and at the end, by a bytes-level reader
    for the `event: NAME` / `data: JSON` shape every Anthropic event has (`_batch` checks a
    whole batch at once and reads its events into structs; a batch of any other shape goes
    through sse.SSEReader, with the same result), and nothing is re-encoded.
    """

    passive = True  # only observes: the relay passes the upstream's bytes on unchanged
    PARSE_EVERY = 64 * 1024

    def __init__(self, limit: int = MAX_MESSAGE_BYTES) -> None:
        self.limit = limit
        self.message: dict[str, Any] | None = None
        self.complete = False
        self.broken: str | None = None  # why the answer cannot be stored
        self._blocks: dict[int, dict[str, Any]] = {}
        self._json: dict[int, list[str]] = {}
        # Text, thinking and signature pieces per (block, field), joined once the block stops:
        # adding each delta to the block's string would copy the answer once per delta.
        self._pieces: dict[tuple[int, str], list[str]] = {}
        self._size = 0
        self._stopped = False
        self._raw: list[bytes] = []  # bytes not parsed yet
        self._held = 0
        self._reader: sse.SSEReader | None = None  # once the stream is not of the usual shape

    def on_bytes(self, chunk: bytes) -> None:
        """Take the next bytes of the stream (any boundaries); pass them on unchanged."""
        if self.broken is not None or not chunk:
            return
        self._raw.append(chunk)
        self._held += len(chunk)
        if self._held >= self.PARSE_EVERY:
            self._parse()

    def held_bytes(self) -> int:
        """Stream bytes taken but not parsed yet."""
        return self._held

    def _parse(self, end: bool = False) -> None:
        buf = b"".join(self._raw)
        self._raw, self._held = [], 0
        if self._reader is None and b"\r" not in buf:
            cut = len(buf) if end else buf.rfind(b"\n\n") + 2
            if cut > 1 and self._batch(buf[:cut]):
                buf = buf[cut:]
                if buf and not end:
                    self._raw, self._held = [buf], len(buf)
                    return
                if not buf:
                    return
        if self._reader is None:
            self._reader = sse.SSEReader()
        events = self._reader.feed(buf)
        if end:
            events += self._reader.close()
        for ev in events:
            try:
                data = ev.json()
            except msgspec.DecodeError:
                continue
            if isinstance(data, dict) and self.broken is None:
                self.on_event(ev.event, data)

    def _batch(self, buf: bytes) -> bool:
        """Take the events of `buf` (whole events, no CR) when it is only `event: NAME` /
        `data: JSON` blocks one blank line apart, each of a type listed above and named after
        it; False (nothing taken) otherwise. The checks are made on the whole batch, and the
        data is read by one decoder mapped over it."""
        if self.broken is not None:
            return True  # nothing more is taken
        lines = buf.strip(b"\n").split(b"\n")
        # event, data, blank, event, data, blank, ..., event, data: the blanks empty, the data
        # lines all "data: ..." (when the least and the greatest are, all between them are), and
        # the event lines checked against the types read.
        data = lines[1::3]
        if len(lines) % 3 != 2 or any(lines[2::3]) or min(data)[:6] != b"data: " or max(data)[:6] != b"data: ":
            return False
        try:
            evs = list(map(_event, map(_after_data, data)))
        except msgspec.DecodeError:
            return False
        if list(map(_LINE.__getitem__, map(type, evs))) != lines[0::3]:
            return False
        limit, size = self.limit, self._size
        add: Callable[[str], None] | None = None  # adds to the text of block `at`
        at = None
        for ev, line in zip(evs, data, strict=True):
            if type(ev) is _Delta:
                d = ev.delta
                if type(d) is _Text and ev.index == at and add is not None:
                    add(d.text)  # most of a stream: the next piece of the same text
                    size += len(d.text)
                    if size > limit:
                        self.broken = _unexpected("content_block_delta", ValueError(_too_large(limit)))
                        break
                    continue
                self._size = size
                try:
                    if type(d) is _Text:
                        self._piece(ev.index, d.text, "text")
                        at, add = ev.index, self._pieces[(ev.index, "text")].append
                    elif type(d) is _Json:
                        self._piece(ev.index, d.partial_json, None)
                    elif type(d) is _Thinking:
                        self._piece(ev.index, d.thinking, "thinking")
                    elif type(d) is _Signature:
                        self._piece(ev.index, d.signature, "signature")
                    else:
                        self._take_raw("content_block_delta", line[6:])
                except (KeyError, ValueError) as e:
                    self.broken = _unexpected("content_block_delta", e)
                size = self._size
            elif type(ev) is not _PING:
                self._size = size
                self._take_raw(_NAME[type(ev)], line[6:])
                size = self._size
                add = None  # a block started again, or the message joined: its list is gone
            if self.broken is not None:
                break
        self._size = size
        return True

    def _take_raw(self, name: str, data: bytes) -> None:
        """One event of the usual shape, read into a dict and taken."""
        try:
            obj = _decode(data)
        except msgspec.DecodeError:
            try:
                obj = _decode(data.decode("utf-8", errors="replace"))
            except msgspec.DecodeError:
                return
        if type(obj) is dict:
            self.on_event(name, obj)

    # -- EventFilter ----------------------------------------------------------------------

    def on_event(self, event: str, data: dict[str, Any]) -> list[Event]:
        """Take one SSE event; pass it on unchanged."""
        if self.broken is None:
            try:
                self._take(event, data)
            except (KeyError, TypeError, ValueError, AttributeError) as e:
                self.broken = _unexpected(event, e)
        return [(event, data)]

    def on_message(self, message: dict[str, Any]) -> dict[str, Any]:
        """Take a whole non-streaming response body; pass it on unchanged."""
        if message.get("type") == "message":
            self.message = message
            self._stopped = True
        else:
            self.broken = "the response is not a message"
        return message

    def on_end(self, complete: bool) -> None:
        """The response is over."""
        if self._raw or self._reader is not None:
            self._parse(end=True)
        self.complete = complete and self._stopped and self.broken is None

    # -- assembling -------------------------------------------------------------------------

    def _take(self, event: str, data: dict[str, Any]) -> None:
        kind = data.get("type", event)
        if kind == "message_start":
            self.message = dict(data["message"])
            self.message["content"] = []
        elif kind == "content_block_start":
            block = dict(data["content_block"])
            index = int(data["index"])
            self._blocks[index] = block
            for name in _DELTA_FIELDS.values():
                self._pieces.pop((index, name), None)  # a block started again starts empty
            if block.get("type") == "tool_use":
                self._json[index] = []
        elif kind == "content_block_delta":
            self._delta(int(data["index"]), data["delta"])
        elif kind == "content_block_stop":
            self._stop(int(data["index"]))
        elif kind == "message_delta":
            self._message_delta(data)
        elif kind == "message_stop":
            self._finish()
        elif kind == "error":
            self.broken = "the stream carried an error"

    def _delta(self, index: int, delta: dict[str, Any]) -> None:
        if index not in self._blocks:
            raise KeyError(index)
        kind = delta["type"]
        if kind == "input_json_delta":
            self._piece(index, delta["partial_json"], None)
            return
        name = _DELTA_FIELDS.get(kind)
        if name is None:
            raise ValueError(f"{kind} is not replayed by the cache")
        piece = delta[name]
        if type(piece) is not str:
            raise TypeError(f"{kind} carries a {type(piece).__name__}, not text")
        self._piece(index, piece, name)

    def _piece(self, index: int, piece: Any, name: str | None) -> None:
        """Add a delta's piece to block `index`: to its tool input when `name` is None, else
        to its text, thinking or signature."""
        if index not in self._blocks:
            raise KeyError(index)
        if name is None:
            self._json[index].append(piece)
        else:
            pieces = self._pieces.get((index, name))
            if pieces is None:
                pieces = self._pieces[(index, name)] = []
            pieces.append(piece)
        self._size += len(piece)
        if self._size > self.limit:
            raise ValueError(_too_large(self.limit))

    def _join(self) -> None:
        """Move the pieces of every block's text into the block."""
        for (index, name), pieces in self._pieces.items():
            block = self._blocks[index]
            block[name] = block.get(name, "") + "".join(pieces)
        self._pieces.clear()

    def _stop(self, index: int) -> None:
        if index in self._json:
            raw = "".join(self._json.pop(index))
            self._blocks[index]["input"] = msgspec.json.decode(raw) if raw else self._blocks[index].get("input", {})

    def _message_delta(self, data: dict[str, Any]) -> None:
        if self.message is None:
            raise ValueError("message_delta before message_start")
        for k, v in data.get("delta", {}).items():
            self.message[k] = v
        usage = data.get("usage")
        if isinstance(usage, dict):
            self.message["usage"] = {**self.message.get("usage", {}), **usage}

    def _finish(self) -> None:
        if self.message is None:
            raise ValueError("message_stop before message_start")
        if self._json:
            raise ValueError("a tool_use block was not stopped")
        self._join()
        self.message["content"] = [self._blocks[i] for i in sorted(self._blocks)]
        self._stopped = True


def _too_large(limit: int) -> str:
    return f"the answer is larger than {limit} bytes"


def _unexpected(event: str, e: Exception) -> str:
    """Why an answer is not stored when taking one of its events failed."""
    return f"unexpected {event} event ({type(e).__name__}: {e})"


def unstorable(message: dict[str, Any]) -> str | None:
    """Why `message` must not be stored, or None when it may."""
    if message.get("type") != "message" or message.get("role") != "assistant":
        return "not an assistant message"
    if message.get("stop_reason") not in STORABLE_STOP_REASONS:
        return f"stop_reason {message.get('stop_reason')!r}"
    content = message.get("content")
    if not isinstance(content, list) or not content:
        return "no content"
    for block in content:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind not in STORABLE_BLOCKS:
            return f"a {kind} block"
        if kind == "text" and block.get("citations"):
            return "a text block with citations"
        if kind == "tool_use" and not isinstance(block.get("input"), dict):
            return "a tool_use block without an input object"
    return None


def semantic_view(message: dict[str, Any], read_only_tools: tuple[str, ...] | frozenset[str]) -> dict[str, Any] | None:
    """The message as a paraphrase may receive it, or None when it must not.

    Only text and calls of read-only tools are served; thinking blocks are dropped (their
    reasoning was about the other wording), which is only valid for an answer without tool
    calls: a tool call's thinking must go back to the API with its result.
    """
    content = message.get("content") or []
    tools = [b for b in content if b.get("type") == "tool_use"]
    if any(b.get("name") not in read_only_tools for b in tools):
        return None
    thinking = [b for b in content if b.get("type") in ("thinking", "redacted_thinking")]
    if tools and thinking:
        return None
    kept = [b for b in content if b.get("type") in ("text", "tool_use")]
    if not kept:
        return None
    return {**message, "content": kept}


def answer_text(message: dict[str, Any]) -> str:
    """The text and tool inputs of a message (what a reader of the answer sees)."""
    parts: list[str] = []
    for b in message.get("content") or []:
        if b.get("type") == "text":
            parts.append(str(b.get("text", "")))
        elif b.get("type") == "tool_use":
            parts.append(msgspec.json.encode(b.get("input", {})).decode())
    return "\n".join(parts)


def fresh(message: dict[str, Any]) -> dict[str, Any]:
    """A copy of `message` for one replay: new message and tool-use ids, zero usage."""
    content = []
    for b in message.get("content") or []:
        if b.get("type") == "tool_use":
            b = {**b, "id": new_id("toolu_")}
        content.append(b)
    return {
        "id": new_id("msg_"),
        "type": "message",
        "role": "assistant",
        "model": message.get("model"),
        "content": content,
        "stop_reason": message.get("stop_reason"),
        "stop_sequence": message.get("stop_sequence"),
        "usage": dict(ZERO_USAGE),
    }


def events(message: dict[str, Any]) -> list[Event]:
    """The SSE events that stream `message` (already `fresh`)."""
    start = {**message, "content": [], "stop_reason": None, "stop_sequence": None}
    out: list[Event] = [("message_start", {"type": "message_start", "message": start})]
    for i, block in enumerate(message["content"]):
        out.extend(_block_events(i, block))
    out.append(
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": message["stop_reason"], "stop_sequence": message.get("stop_sequence")},
                "usage": {"output_tokens": 0},
            },
        )
    )
    out.append(("message_stop", {"type": "message_stop"}))
    return out


def _block_events(i: int, block: dict[str, Any]) -> list[Event]:
    kind = block["type"]

    def delta(d: dict[str, Any]) -> Event:
        return ("content_block_delta", {"type": "content_block_delta", "index": i, "delta": d})

    deltas: list[Event] = []
    if kind == "text":
        start: dict[str, Any] = {"type": "text", "text": ""}
        if block.get("text"):
            deltas.append(delta({"type": "text_delta", "text": block["text"]}))
    elif kind == "tool_use":
        start = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
        if block.get("input"):
            deltas.append(delta({"type": "input_json_delta", "partial_json": msgspec.json.encode(block["input"]).decode()}))
    elif kind == "thinking":
        start = {"type": "thinking", "thinking": "", "signature": ""}
        if block.get("thinking"):
            deltas.append(delta({"type": "thinking_delta", "thinking": block["thinking"]}))
        if block.get("signature"):
            deltas.append(delta({"type": "signature_delta", "signature": block["signature"]}))
    else:  # redacted_thinking comes whole in its start event
        start = dict(block)
    return [
        ("content_block_start", {"type": "content_block_start", "index": i, "content_block": start}),
        *deltas,
        ("content_block_stop", {"type": "content_block_stop", "index": i}),
    ]


def replay_body(message: dict[str, Any], stream: bool) -> tuple[bytes, str]:
    """The response body and content type that replay `message` to a client."""
    m = fresh(message)
    if not stream:
        return msgspec.json.encode(m), "application/json"
    return b"".join(sse.encode(name, data) for name, data in events(m)), "text/event-stream; charset=utf-8"
