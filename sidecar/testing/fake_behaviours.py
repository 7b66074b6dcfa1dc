"""Scripted behaviours of the fake Anthropic upstream, and the requests it records."""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar, TypeAlias, cast

import msgspec

from sidecar.testing import anthropic_sse as sse

DEFAULT_TEXT = "Hello from the fake upstream."
_LOREM = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor".split()


# ---------------------------------------------------------------- behaviours


@dataclass(frozen=True, slots=True)
class Rendered:
    """A reply's content, ready to send: blocks, their pre-framed events, and token counts."""

    blocks: list[sse.Block]
    content: list[bytes]
    output_tokens: int
    stop_reason: str


@dataclass(frozen=True, kw_only=True)
class _Reply:
    model: str | None = None
    usage: dict[str, int] = field(default_factory=dict)
    stop_reason: str | None = None
    delay_between_events: float = 0.0

    def __post_init__(self) -> None:
        unknown = set(self.usage) - {f.name for f in dataclasses.fields(sse.Usage)}
        if unknown:
            raise ValueError(f"unknown usage fields {sorted(unknown)}")


@dataclass(frozen=True)
class Text(_Reply):
    """Reply with `text` in `chunks` deltas (None: one per word), after optional `thinking`."""

    kind: ClassVar[str] = "text"
    text: str = DEFAULT_TEXT
    chunks: int | None = None
    thinking: str | None = None

    @classmethod
    def bench(cls, words: int = 50) -> Text:
        """A text reply of `words` words, streamed as one delta per word."""
        return cls(" ".join(_LOREM[i % len(_LOREM)] for i in range(words)))

    @cached_property
    def _rendered(self) -> Rendered:
        blocks = [sse.text_block(self.text, self.chunks)]
        words = sse.count_words(self.text)
        if self.thinking is not None:
            blocks.insert(0, sse.thinking_block(self.thinking))
            words += sse.count_words(self.thinking)
        return Rendered(blocks, sse.content_events(blocks), max(1, words), "end_turn")

    def render(self) -> Rendered:
        """The content blocks and their events (computed once per behaviour)."""
        return self._rendered


@dataclass(frozen=True)
class ToolUse(_Reply):
    """Reply with a tool_use block (after optional `text`); input JSON in `chunks` pieces."""

    kind: ClassVar[str] = "tool_use"
    name: str = "get_weather"
    input: dict[str, Any] = field(default_factory=lambda: {"location": "Paris"})
    text: str | None = None
    chunks: int = 3
    id: str | None = None

    def render(self) -> Rendered:
        """The content blocks and their events (a fresh tool id unless `id` is set)."""
        tool = sse.tool_use_block(
            self.id or sse.new_id("toolu_01"), self.name, self.input, self.chunks
        )
        blocks = [tool] if self.text is None else [sse.text_block(self.text), tool]
        words = sse.count_words(self.text or "") + len(msgspec.json.encode(self.input)) // 4
        return Rendered(blocks, sse.content_events(blocks), max(1, words), "tool_use")


@dataclass(frozen=True)
class Error:
    """Answer an HTTP error with the API's envelope; `type` defaults from `status`."""

    kind: ClassVar[str] = "error"
    status: int = 529
    type: str | None = None
    message: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    should_retry: bool | None = None


Reply: TypeAlias = Text | ToolUse


@dataclass(frozen=True)
class StallBeforeHeaders:
    """Send nothing for `seconds`, then behave like `then`."""

    kind: ClassVar[str] = "stall_before_headers"
    seconds: float = 1.0
    then: Behaviour = field(default_factory=Text)


@dataclass(frozen=True)
class Cut:
    """Send `after_events` events (non-streaming: `after_bytes`, default half the body), then RST.

    The reset waits `abort_delay` seconds after the last write, so that a client that is
    reading has taken the bytes in: aiohttp drops data it has not handed out on a reset.
    `clean_end` (streaming only) ends the response normally instead, `end_delay` seconds
    after the last event, as a truncating upstream would: the client then sees a stream
    without its message_stop.
    """

    kind: ClassVar[str] = "cut"
    after_events: int = 3
    after_bytes: int | None = None
    abort_delay: float = 0.02
    clean_end: bool = False
    end_delay: float = 0.0
    reply: Reply = field(default_factory=Text)


@dataclass(frozen=True)
class StallMidStream:
    """Send `after_events` events (non-streaming: half the body), wait `seconds`, then the rest."""

    kind: ClassVar[str] = "stall_mid_stream"
    after_events: int = 3
    seconds: float = 1.0
    reply: Reply = field(default_factory=Text)


@dataclass(frozen=True)
class StreamError:
    """Send `after_events` events, then an in-stream `event: error`, then end cleanly.

    A non-streaming request gets the matching HTTP error (529 for overloaded_error).
    """

    kind: ClassVar[str] = "stream_error"
    after_events: int = 1
    type: str = "overloaded_error"
    message: str = "Overloaded"
    reply: Reply = field(default_factory=Text)


Behaviour: TypeAlias = (
    Text | ToolUse | Error | StallBeforeHeaders | Cut | StallMidStream | StreamError
)
KINDS: dict[str, type[Any]] = {
    c.kind: c for c in (Text, ToolUse, Error, StallBeforeHeaders, Cut, StallMidStream, StreamError)
}
DEFAULT_REPLY = Text()


def behaviour_from_json(data: Mapping[str, Any]) -> Behaviour:
    """Build a behaviour from its JSON form, e.g. {"kind": "cut", "after_events": 2}."""
    fields = dict(data)
    kind = fields.pop("kind", None)
    if kind not in KINDS:
        raise ValueError(f"unknown behaviour kind {kind!r}; expected one of {sorted(KINDS)}")
    for key in ("then", "reply"):
        if key in fields:
            fields[key] = behaviour_from_json(fields[key])
    if "reply" in fields and not isinstance(fields["reply"], Text | ToolUse):
        raise ValueError(f"{kind}: reply must be a text or tool_use behaviour")
    return cast(Behaviour, KINDS[kind](**fields))


def behaviour_to_json(behaviour: Behaviour) -> dict[str, Any]:
    """The JSON form of a behaviour (the inverse of `behaviour_from_json`)."""
    out: dict[str, Any] = {"kind": behaviour.kind}
    for f in dataclasses.fields(behaviour):
        value = getattr(behaviour, f.name)
        out[f.name] = behaviour_to_json(value) if f.name in ("then", "reply") else value
    return out


# ---------------------------------------------------------------- recording


@dataclass(frozen=True)
class RecordedRequest:
    """One request as received: headers in their raw order and case, body as bytes."""

    method: str
    path: str
    query_string: str
    headers: list[tuple[str, str]]
    body: bytes
    received_at: float = 0.0  # time.monotonic() on arrival

    def header(self, name: str) -> str | None:
        """The first value of header `name` (case-insensitive), or None."""
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)

    def json(self) -> Any:
        """The body decoded as JSON."""
        return msgspec.json.decode(self.body)

    def to_json(self) -> dict[str, Any]:
        """The form GET /__fake/requests returns (body as base64, and as text if UTF-8)."""
        try:
            text: str | None = self.body.decode()
        except UnicodeDecodeError:
            text = None
        return {
            "method": self.method,
            "path": self.path,
            "query_string": self.query_string,
            "headers": [list(h) for h in self.headers],
            "body_base64": base64.b64encode(self.body).decode(),
            "body_text": text,
            "received_at": self.received_at,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RecordedRequest:
        """Rebuild a request from `to_json` output."""
        headers = [(str(k), str(v)) for k, v in data["headers"]]
        body = base64.b64decode(data["body_base64"])
        received_at = float(data.get("received_at", 0.0))
        return cls(data["method"], data["path"], data["query_string"], headers, body, received_at)
