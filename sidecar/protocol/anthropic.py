"""The Anthropic Messages wire format: the few request fields the sidecar reads, and a
streaming tap that reads usage out of SSE bytes without holding them back."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import msgspec

from sidecar.errors import InvalidRequest
from sidecar.protocol.foreign import FOREIGN_PREFIXES


class _Block(msgspec.Struct):
    """A content block, as far as the foreign-thinking check reads it."""

    type: str | None = None
    signature: str | None = None


class _Message(msgspec.Struct):
    content: str | list[_Block] | None = None


class RequestHead(msgspec.Struct):
    """The fields of a Messages request the hot path needs. `messages` holds each block's
    type and signature only, or None when the body's messages have another shape (then
    `foreign_free` is False and the body is searched instead). `fields` are the body's
    top-level fields, undecoded (views of the body's bytes): the cache's keys read them
    without scanning the body again."""

    model: str | None = None
    stream: bool | None = None
    max_tokens: int | None = None
    messages: list[_Message] | None = None
    fields: dict[str, msgspec.Raw] | None = None

    def foreign_free(self) -> bool:
        """True when the messages were read and no block is a thinking block another provider
        made (sidecar.protocol.foreign.is_foreign): the body needs no scrubbing."""
        if self.messages is None:
            return False
        for m in self.messages:
            content = m.content
            if type(content) is list:
                for b in content:
                    if b.type == "thinking" and (not b.signature or b.signature.startswith(FOREIGN_PREFIXES)):
                        return False
        return True


_top_decoder = msgspec.json.Decoder(dict[str, msgspec.Raw])  # validates the whole body, one scan
_model_decoder = msgspec.json.Decoder(str | None)
_stream_decoder = msgspec.json.Decoder(bool | None)
_max_tokens_decoder = msgspec.json.Decoder(int | None)
_messages_decoder = msgspec.json.Decoder(list[_Message] | None)
_HEAD_FIELDS: dict[str, msgspec.json.Decoder[Any]] = {
    "model": _model_decoder,
    "stream": _stream_decoder,
    "max_tokens": _max_tokens_decoder,
}


def body_error(e: msgspec.DecodeError | RecursionError) -> InvalidRequest:
    """The refusal of a request body the JSON decoder failed on (a ValidationError is a
    DecodeError whose JSON was fine but a field's type was not)."""
    if isinstance(e, RecursionError):
        return InvalidRequest("the request body's JSON is nested too deeply")
    if isinstance(e, msgspec.ValidationError):
        return InvalidRequest(f"invalid request body: {e}")
    return InvalidRequest(f"the request body is not valid JSON: {e}")


def parse_head(body: bytes) -> RequestHead:
    """Validate that `body` is a JSON object and return its head fields, or raise InvalidRequest."""
    if not body:
        raise InvalidRequest("the request body is empty; expected a JSON object")
    try:
        fields = _top_decoder.decode(body)
        head = {name: _field(name, raw) for name, raw in fields.items() if name in _HEAD_FIELDS}  # in body order
    except (msgspec.DecodeError, RecursionError) as e:
        raise body_error(e) from None
    raw = fields.get("messages")
    try:
        messages = None if raw is None else _messages_decoder.decode(raw)
    except (msgspec.ValidationError, RecursionError):
        # Messages of another shape than Anthropic's (e.g. a number for a signature) are
        # the upstream's to refuse; only the head fields are checked here.
        messages = None
    except msgspec.DecodeError as e:  # bytes the scan skipped without reading (e.g. not UTF-8)
        raise body_error(e) from None
    return RequestHead(head.get("model"), head.get("stream"), head.get("max_tokens"), messages, fields)


def _field(name: str, raw: msgspec.Raw) -> Any:
    try:
        return _HEAD_FIELDS[name].decode(raw)
    except msgspec.ValidationError as e:
        raise msgspec.ValidationError(f"{e} - at `$.{name}`") from None


@dataclass(slots=True)
class Usage:
    """Token counts as Anthropic reports them (input excludes cache reads and writes)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0

    def update(self, usage: dict[str, Any]) -> None:
        """Take the counts present in an Anthropic `usage` object (later values win)."""
        for src, dst in (
            ("input_tokens", "input_tokens"),
            ("output_tokens", "output_tokens"),
            ("cache_read_input_tokens", "cache_read_tokens"),
            ("cache_creation_input_tokens", "cache_write_tokens"),
        ):
            v = usage.get(src)
            if isinstance(v, int) and not isinstance(v, bool):
                setattr(self, dst, v)


@dataclass(slots=True)
class MessageSummary:
    """What the ledger needs from one response: model, usage, stop reason, errors."""

    usage: Usage = field(default_factory=Usage)
    model: str | None = None
    stop_reason: str | None = None
    error_type: str | None = None
    error_message: str | None = None
    started: bool = False
    stopped: bool = False
    content_blocks_done: int = 0
    first_delta_at: float | None = None  # perf_counter() when the first content delta passed
    delta_events: int = 0  # content_block_delta events that passed (streams)
    delta_bytes: int = 0  # ... and their bytes, framing included

    def delivered_bytes(self) -> int:
        """About how many bytes of content a stream's deltas carried: their events' bytes less
        the framing of the smallest delta event each (so it errs high, by a few bytes an
        event). What a stream that broke off before its final usage delivered."""
        return max(0, self.delta_bytes - self.delta_events * DELTA_FRAMING)

    def take_message(self, msg: dict[str, Any]) -> None:
        """Read a complete non-streaming response body (message or error envelope)."""
        if msg.get("type") == "error":
            self._take_error(msg)
            return
        self.started = self.stopped = True
        if isinstance(msg.get("model"), str):
            self.model = msg["model"]
        if isinstance(msg.get("stop_reason"), str):
            self.stop_reason = msg["stop_reason"]
        if isinstance(msg.get("usage"), dict):
            self.usage.update(msg["usage"])

    def _take_error(self, payload: dict[str, Any]) -> None:
        err = payload.get("error")
        if isinstance(err, dict):
            self.error_type = str(err.get("type") or "error")
            self.error_message = str(err.get("message") or "")


_WATCHED = (b"event: message_start", b"event: message_delta", b"event: message_stop", b"event: error")
_BLOCK_STOP = b"event: content_block_stop"
_DELTA = b"event: content_block_delta"
# The bytes of the smallest delta event, one with empty content (a text_delta at index 0).
DELTA_FRAMING = len(b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":""}}')


class SSETap:
    """Reads usage from a copy of an SSE stream as it passes, never delaying a byte.

    Only `message_start`, `message_delta`, `message_stop` and `error` events are parsed;
    every other event costs one boundary search and a prefix check.
    """

    __slots__ = ("_buf", "summary")

    def __init__(self) -> None:
        self._buf = b""
        self.summary = MessageSummary()

    def feed(self, chunk: bytes) -> None:
        """Consume the next bytes of the stream (any boundaries, events may be split)."""
        buf = self._buf + chunk if self._buf else chunk
        if b"\r" in buf:
            buf = buf.replace(b"\r\n", b"\n")
        start = deltas = delta_bytes = 0
        while True:
            end = buf.find(b"\n\n", start)
            if end < 0:
                break
            if buf.startswith(_DELTA, start):  # most events: checked first
                deltas += 1
                delta_bytes += end - start
            elif buf.startswith(_WATCHED, start):
                self._event(buf[start:end])
            elif buf.startswith(_BLOCK_STOP, start):
                self.summary.content_blocks_done += 1
            start = end + 2
        self._buf = buf[start:]
        if deltas:
            s = self.summary
            s.delta_events += deltas
            s.delta_bytes += delta_bytes
            if s.first_delta_at is None:
                s.first_delta_at = time.perf_counter()

    def _event(self, raw: bytes) -> None:
        name = b""
        data: list[bytes] = []
        for line in raw.split(b"\n"):
            if line.startswith(b"event:"):
                name = line[6:].strip()
            elif line.startswith(b"data:"):
                data.append(line[5:].lstrip(b" "))
        try:
            payload = msgspec.json.decode(b"\n".join(data)) if data else {}
        except msgspec.DecodeError:
            return
        if not isinstance(payload, dict):
            return
        s = self.summary
        if name == b"message_start":
            s.started = True
            msg = payload.get("message")
            if isinstance(msg, dict):
                if isinstance(msg.get("model"), str):
                    s.model = msg["model"]
                if isinstance(msg.get("usage"), dict):
                    s.usage.update(msg["usage"])
        elif name == b"message_delta":
            delta = payload.get("delta")
            if isinstance(delta, dict) and isinstance(delta.get("stop_reason"), str):
                s.stop_reason = delta["stop_reason"]
            if isinstance(payload.get("usage"), dict):
                s.usage.update(payload["usage"])
        elif name == b"message_stop":
            s.stopped = True
        elif name == b"error":
            s._take_error(payload)
