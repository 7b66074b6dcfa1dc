"""A state machine that emits a valid Anthropic event sequence for a translated stream.

Translators (OpenAI, Gemini, Bedrock Converse) report what they find in the upstream's
stream: text, thinking, a signature, pieces of a tool call, the finish. The writer turns
that into `message_start`, `content_block_start/delta/stop`, `message_delta` and
`message_stop`, and guarantees the invariants clients rely on:

- exactly one message_start first and one message_stop last;
- one block open at a time, indexed 0, 1, 2, ... in order;
- no delta for a block that was not started or is already stopped;
- parallel tool calls whose arguments interleave still become whole, ordered blocks: the
  first call streams live, the others are held and emitted whole when it closes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

Event = tuple[str, dict[str, Any]]

_B32 = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def new_id(prefix: str) -> str:
    """An Anthropic-looking id (`msg_...`, `toolu_...`) with 24 random base-62 characters."""
    raw = int.from_bytes(os.urandom(18), "big")
    chars = []
    for _ in range(24):
        raw, r = divmod(raw, 62)
        chars.append(_B32[r])
    return prefix + "".join(chars)


@dataclass
class _Tool:
    key: Any
    id: str
    name: str
    args: list[str] = field(default_factory=list)
    state: str = "pending"  # pending (held) | live (its block is open) | done


class EventWriter:
    """Collects Anthropic events; call `take()` to drain those produced so far."""

    def __init__(self, model: str, message_id: str | None = None) -> None:
        self.model = model
        self.message_id = message_id or new_id("msg_")
        self._out: list[Event] = []
        self.started = False
        self.finished = False
        self._next_index = 0
        self._open: str | None = None  # text | thinking | tool_use | None
        self._live_tool: _Tool | None = None
        self._tools: dict[Any, _Tool] = {}
        self._order: list[_Tool] = []
        self.usage: dict[str, int] = {"input_tokens": 0, "output_tokens": 0}
        self.content_seen = False

    # -- the message ----------------------------------------------------------------------

    def start(self, input_tokens: int = 0, cache_read: int = 0, cache_write: int = 0) -> None:
        """Emit message_start (once; later calls only update the input counts)."""
        self.usage["input_tokens"] = input_tokens
        if cache_read:
            self.usage["cache_read_input_tokens"] = cache_read
        if cache_write:
            self.usage["cache_creation_input_tokens"] = cache_write
        if self.started:
            return
        self.started = True
        self._out.append(
            (
                "message_start",
                {
                    "type": "message_start",
                    "message": {
                        "id": self.message_id,
                        "type": "message",
                        "role": "assistant",
                        "model": self.model,
                        "content": [],
                        "stop_reason": None,
                        "stop_sequence": None,
                        "usage": dict(self.usage),
                    },
                },
            )
        )

    def finish(
        self,
        stop_reason: str,
        *,
        output_tokens: int | None = None,
        input_tokens: int | None = None,
        cache_read: int | None = None,
        cache_write: int | None = None,
        stop_sequence: str | None = None,
    ) -> None:
        """Close every block (held tool calls are emitted whole), then message_delta and message_stop."""
        if self.finished:
            return
        self.start(self.usage["input_tokens"])
        self._close_open()
        for tool in self._order:
            if tool.state == "pending":
                self._emit_whole(tool)
        usage: dict[str, int] = {}
        if input_tokens is not None:
            usage["input_tokens"] = input_tokens
        if cache_read is not None:
            usage["cache_read_input_tokens"] = cache_read
        if cache_write is not None:
            usage["cache_creation_input_tokens"] = cache_write
        usage["output_tokens"] = output_tokens if output_tokens is not None else self.usage["output_tokens"]
        self.usage.update(usage)
        self._out.append(
            (
                "message_delta",
                {"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence}, "usage": usage},
            )
        )
        self._out.append(("message_stop", {"type": "message_stop"}))
        self.finished = True

    def error(self, error_type: str, message: str) -> None:
        """An in-stream error event (the stream ends after it)."""
        self._out.append(("error", {"type": "error", "error": {"type": error_type, "message": message}}))
        self.finished = True

    def take(self) -> list[Event]:
        """The events produced since the last call."""
        out, self._out = self._out, []
        return out

    @property
    def in_tool_arguments(self) -> bool:
        """True while a tool call's arguments are being received (a cut here is an error)."""
        return self._live_tool is not None or any(t.state == "pending" for t in self._order)

    # -- content --------------------------------------------------------------------------

    def text(self, s: str) -> None:
        """Append text (opens a text block when needed)."""
        if not s:
            return
        self._ensure("text", {"type": "text", "text": ""})
        self._delta({"type": "text_delta", "text": s})

    def thinking(self, s: str) -> None:
        """Append reasoning (opens a thinking block when needed)."""
        if not s:
            return
        self._ensure("thinking", {"type": "thinking", "thinking": "", "signature": ""})
        self._delta({"type": "thinking_delta", "thinking": s})

    def signature(self, sig: str) -> None:
        """The signature of the current thinking block (opens an empty one when none is open)."""
        if not sig:
            return
        self._ensure("thinking", {"type": "thinking", "thinking": "", "signature": ""})
        self._delta({"type": "signature_delta", "signature": sig})
        self._close_open()  # a signature ends its thinking block

    def redacted_thinking(self, data: str) -> None:
        """A whole redacted_thinking block."""
        self._close_open()
        self._block({"type": "redacted_thinking", "data": data}, None)

    def tool_call(self, key: Any, *, id: str | None = None, name: str | None = None, args: str = "") -> None:
        """A tool call or a piece of one: `key` tells calls apart (an index, an id); `id` and
        `name` are taken when first given; `args` is the next piece of the JSON arguments."""
        tool = self._tools.get(key)
        if tool is None:
            if not name:
                raise ValueError(f"tool call {key!r} has no name")
            tool = _Tool(key, id or new_id("toolu_"), name)
            self._tools[key] = tool
            self._order.append(tool)
            if self._live_tool is None:
                self._close_open()
                self._start_live(tool)
        if not args:
            return
        if tool.state == "live":
            self._delta({"type": "input_json_delta", "partial_json": args})
        elif tool.state == "pending":
            tool.args.append(args)
        else:
            raise ValueError(f"arguments for tool call {tool.id} arrived after its block was closed")

    # -- internals ------------------------------------------------------------------------

    def _start_live(self, tool: _Tool) -> None:
        self.start(self.usage["input_tokens"])
        tool.state = "live"
        self._live_tool = tool
        self._block({"type": "tool_use", "id": tool.id, "name": tool.name, "input": {}}, "tool_use")
        if tool.args:
            self._delta({"type": "input_json_delta", "partial_json": "".join(tool.args)})
            tool.args.clear()

    def _emit_whole(self, tool: _Tool) -> None:
        self._block({"type": "tool_use", "id": tool.id, "name": tool.name, "input": {}}, "tool_use")
        if tool.args:
            self._delta({"type": "input_json_delta", "partial_json": "".join(tool.args)})
        self._close_open()
        tool.state = "done"

    def _ensure(self, kind: str, block: dict[str, Any]) -> None:
        if self._open == kind and self._live_tool is None:
            return
        self._close_open()
        # Held tool calls go out before new text so their order is kept.
        for tool in self._order:
            if tool.state == "pending":
                self._emit_whole(tool)
        self._block(block, kind)

    def _block(self, block: dict[str, Any], kind: str | None) -> None:
        self.start(self.usage["input_tokens"])
        self.content_seen = True
        self._out.append(("content_block_start", {"type": "content_block_start", "index": self._next_index, "content_block": block}))
        self._open = kind
        if kind is None:
            self._out.append(("content_block_stop", {"type": "content_block_stop", "index": self._next_index}))
            self._next_index += 1

    def _delta(self, delta: dict[str, Any]) -> None:
        if self._open is None:
            raise AssertionError("delta with no open block")  # the writer's own invariant
        self._out.append(("content_block_delta", {"type": "content_block_delta", "index": self._next_index, "delta": delta}))

    def _close_open(self) -> None:
        if self._open is None:
            return
        self._out.append(("content_block_stop", {"type": "content_block_stop", "index": self._next_index}))
        self._next_index += 1
        self._open = None
        if self._live_tool is not None:
            self._live_tool.state = "done"
            self._live_tool = None
