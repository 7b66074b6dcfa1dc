"""Anthropic Messages API wire format: SSE event builders, message bodies, and an SSE parser.

A reply is a list of content `Block`s. `stream_events` frames them the way the API streams
them (message_start, then per block content_block_start, [ping after the first start],
content_block_delta*, content_block_stop, then message_delta and message_stop);
`message_body` gives the same reply as one non-streaming message.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from sidecar.cache.replay import MessageCollector
from sidecar.errors import STATUS_ERROR_TYPES
from sidecar.protocol.sse import SSEReader

SSE_CONTENT_TYPE = "text/event-stream; charset=utf-8"
JSON_CONTENT_TYPE = "application/json"

# The API writes this one event with a space after the colon; every other event is compact.
PING = b'event: ping\ndata: {"type": "ping"}\n\n'

ERROR_TYPE_STATUSES: dict[str, int] = {v: k for k, v in STATUS_ERROR_TYPES.items()}
ERROR_MESSAGES: dict[str, str] = {
    "invalid_request_error": "Invalid request",
    "authentication_error": "invalid x-api-key",
    "billing_error": "Your credit balance is too low to access the Anthropic API.",
    "permission_error": "Your API key does not have permission to use the specified resource.",
    "not_found_error": "Not found",
    "request_too_large": "Request exceeds the maximum allowed number of bytes.",
    "rate_limit_error": "Number of requests has exceeded your per-minute rate limit",
    "api_error": "Internal server error",
    "timeout_error": "Request timed out",
    "overloaded_error": "Overloaded",
}

_B62 = string.ascii_letters + string.digits
_WORD = re.compile(r"\s*\S+")
_encode = msgspec.json.Encoder().encode


def new_id(prefix: str, length: int = 22) -> str:
    """A random id in the API's style, e.g. new_id("msg_01") -> "msg_01XFDUDYJgAACzvnptvVoYEL"."""
    return prefix + "".join(random.choices(_B62, k=length))


def estimate_tokens(body: bytes) -> int:
    """A deterministic token estimate for a request body: one token per four bytes."""
    return max(1, len(body) // 4)


def count_words(text: str) -> int:
    """The number of whitespace-separated words in `text`."""
    return len(text.split())


def split_words(text: str) -> list[str]:
    """Split `text` into word pieces that keep their leading whitespace and join back to it."""
    pieces: list[str] = _WORD.findall(text)
    rest = text[sum(map(len, pieces)) :]
    if rest:
        pieces = [*pieces[:-1], pieces[-1] + rest] if pieces else [rest]
    return pieces


def split_even(text: str, n: int) -> list[str]:
    """Split `text` into `n` pieces of near-equal length (fewer if the text is shorter)."""
    n = max(1, min(n, len(text)))
    size = len(text)
    return [text[i * size // n : (i + 1) * size // n] for i in range(n)]


def split_text(text: str, chunks: int | None) -> list[str]:
    """Word pieces when `chunks` is None, else `chunks` even pieces; [] for empty text."""
    if not text:
        return []
    return split_words(text) if chunks is None else split_even(text, chunks)


def frame(event: str, data: Mapping[str, Any]) -> bytes:
    """One SSE event: `event: NAME\\ndata: JSON\\n\\n`."""
    return b"event: " + event.encode() + b"\ndata: " + _encode(data) + b"\n\n"


MESSAGE_STOP = frame("message_stop", {"type": "message_stop"})


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts for one reply."""

    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0

    def message_json(self, output_tokens: int | None = None) -> dict[str, Any]:
        """The usage object of a message (message_start passes a small output_tokens)."""
        return {
            "input_tokens": self.input_tokens,
            "cache_creation_input_tokens": self.cache_creation_input_tokens,
            "cache_read_input_tokens": self.cache_read_input_tokens,
            "cache_creation": {
                "ephemeral_5m_input_tokens": self.cache_creation_input_tokens,
                "ephemeral_1h_input_tokens": 0,
            },
            "output_tokens": self.output_tokens if output_tokens is None else output_tokens,
            "service_tier": "standard",
        }

    def delta_json(self) -> dict[str, Any]:
        """The usage object of message_delta: cumulative counts, output_tokens final."""
        return {
            "input_tokens": self.input_tokens,
            "cache_creation_input_tokens": self.cache_creation_input_tokens,
            "cache_read_input_tokens": self.cache_read_input_tokens,
            "output_tokens": self.output_tokens,
        }


@dataclass(frozen=True, slots=True)
class Block:
    """One content block: its complete form, its content_block_start form and its deltas."""

    final: dict[str, Any]
    opening: dict[str, Any]
    deltas: tuple[dict[str, Any], ...]


def text_block(text: str, chunks: int | None = None) -> Block:
    """A text block streamed as text_delta pieces (words by default, see `split_text`)."""
    deltas = tuple({"type": "text_delta", "text": p} for p in split_text(text, chunks))
    return Block({"type": "text", "text": text}, {"type": "text", "text": ""}, deltas)


def fake_signature(thinking: str) -> str:
    """A deterministic, signature-shaped base64 string for a thinking block."""
    return base64.b64encode(hashlib.sha256(thinking.encode()).digest() * 3).decode()


def thinking_block(thinking: str, signature: str | None = None, chunks: int | None = None) -> Block:
    """A thinking block: thinking_delta pieces, then one signature_delta."""
    signature = signature or fake_signature(thinking)
    pieces = [{"type": "thinking_delta", "thinking": p} for p in split_text(thinking, chunks)]
    pieces.append({"type": "signature_delta", "signature": signature})
    return Block(
        {"type": "thinking", "thinking": thinking, "signature": signature},
        {"type": "thinking", "thinking": "", "signature": ""},
        tuple(pieces),
    )


def tool_use_block(tool_id: str, name: str, tool_input: dict[str, Any], chunks: int = 3) -> Block:
    """A tool_use block: opened with input {}, then the input JSON as input_json_delta pieces."""
    # The API opens with an empty partial_json before the first real piece.
    pieces = ["", *split_even(json.dumps(tool_input), chunks)]
    return Block(
        {"type": "tool_use", "id": tool_id, "name": name, "input": tool_input},
        {"type": "tool_use", "id": tool_id, "name": name, "input": {}},
        tuple({"type": "input_json_delta", "partial_json": p} for p in pieces),
    )


def message_start(message_id: str, model: str, usage: Usage) -> bytes:
    """The message_start event: an empty assistant message with input-side usage."""
    message: dict[str, Any] = {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": usage.message_json(output_tokens=min(1, usage.output_tokens)),
    }
    return frame("message_start", {"type": "message_start", "message": message})


def content_events(blocks: Sequence[Block]) -> list[bytes]:
    """The content_block_start/delta/stop events of `blocks`, with a ping after the first start."""
    out: list[bytes] = []
    for index, block in enumerate(blocks):
        start = {"type": "content_block_start", "index": index, "content_block": block.opening}
        out.append(frame("content_block_start", start))
        if index == 0:
            out.append(PING)
        for delta in block.deltas:
            body = {"type": "content_block_delta", "index": index, "delta": delta}
            out.append(frame("content_block_delta", body))
        out.append(frame("content_block_stop", {"type": "content_block_stop", "index": index}))
    return out


def message_delta(stop_reason: str | None, usage: Usage) -> bytes:
    """The message_delta event: stop reason and cumulative usage."""
    delta = {"stop_reason": stop_reason, "stop_sequence": None}
    return frame(
        "message_delta", {"type": "message_delta", "delta": delta, "usage": usage.delta_json()}
    )


def stream_events(
    message_id: str,
    model: str,
    content: Sequence[bytes],
    usage: Usage,
    stop_reason: str | None,
) -> list[bytes]:
    """A whole streamed reply; `content` comes from `content_events` (so it can be cached)."""
    return [
        message_start(message_id, model, usage),
        *content,
        message_delta(stop_reason, usage),
        MESSAGE_STOP,
    ]


def message_body(
    message_id: str,
    model: str,
    blocks: Sequence[Block],
    usage: Usage,
    stop_reason: str | None,
) -> dict[str, Any]:
    """The same reply as a non-streaming message."""
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [b.final for b in blocks],
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": usage.message_json(),
    }


def error_body(error_type: str, message: str, request_id: str | None = None) -> dict[str, Any]:
    """The API's error envelope (`request_id` is included when given)."""
    body: dict[str, Any] = {"type": "error", "error": {"type": error_type, "message": message}}
    if request_id is not None:
        body["request_id"] = request_id
    return body


def error_event(error_type: str = "overloaded_error", message: str = "Overloaded") -> bytes:
    """An in-stream `event: error`."""
    return frame("error", error_body(error_type, message))


def encode_json(data: Any) -> bytes:
    """Compact UTF-8 JSON, as the API writes it."""
    return _encode(data)


def sse_events(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    """Parse a complete SSE byte string into (event name, decoded data) pairs."""
    out: list[tuple[str, dict[str, Any]]] = []
    text = raw.decode().replace("\r\n", "\n").replace("\r", "\n")
    for chunk in text.split("\n\n"):
        name, data = "message", []
        for line in chunk.split("\n"):
            if not line or line.startswith(":"):
                continue
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)
        if data:
            out.append((name, json.loads("\n".join(data))))
    return out


def collect_by_events(chunks: Sequence[bytes], limit: int | None = None, complete: bool = True) -> MessageCollector:
    """The cache's collector fed the plain way, the reference its byte readers are held to:
    every event read by SSEReader, decoded, and handed over when it is an object."""
    col = MessageCollector() if limit is None else MessageCollector(limit)
    reader = SSEReader()
    for chunk in [*chunks, None]:
        for ev in reader.feed(chunk) if chunk is not None else reader.close():
            try:
                data = ev.json()
            except msgspec.DecodeError:
                continue
            if isinstance(data, dict):
                col.on_event(ev.event, data)
    col.on_end(complete)
    return col
