"""A Chat Completions SSE stream as Anthropic events, incrementally.

Bytes go through the SSE reader (any boundaries, CRLF, UTF-8 split across reads), each
chunk's delta goes to the EventWriter in Anthropic order (reasoning, text, tool calls), so
content and finish_reason in one chunk, interleaved tool arguments across indices, a name
that arrives after the arguments began, and a choiceless usage chunk after the finish all
come out as a valid event sequence. The message ends at `[DONE]`, or once both the finish
reason and the usage are known.

An upstream that stops without `[DONE]` and without a finish reason was cut: that raises
StreamBroken (the client's connection is then aborted) rather than faking an end_turn;
so does a `[DONE]` with no finish reason while a tool call's arguments are incomplete.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

import msgspec

from sidecar.errors import StreamBroken
from sidecar.protocol.anthropic_stream import Event, EventWriter
from sidecar.protocol.openai.jsonprefix import JsonPrefix
from sidecar.protocol.openai.names import ToolNames, client_tool_id
from sidecar.protocol.openai.response import (
    anthropic_usage,
    as_dict,
    content_text,
    groq_usage,
    parse_arguments,
    reasoning_of,
    stop_reason,
    stop_sequence,
    stream_error,
)
from sidecar.protocol.sse import Event as SSEEvent
from sidecar.protocol.sse import SSEReader

log = logging.getLogger(__name__)


@dataclass
class _Call:
    """One streamed tool call, as far as it has arrived."""

    id: str | None = None
    name: str | None = None
    args: list[str] = field(default_factory=list)
    fed: int = 0  # pieces of `args` already looked at
    sent_parts: list[str] = field(default_factory=list)  # handed to the writer: a closable JSON prefix
    sent_len: int = 0
    unsent: str = ""  # valid text held until it can be closed (a key being written, a comma)
    scan: JsonPrefix = field(default_factory=JsonPrefix)
    started: bool = False

    @property
    def sent(self) -> str:
        return "".join(self.sent_parts)


class ChatStream:
    """Translates one streamed Chat Completions answer (a StreamTranslator)."""

    def __init__(self, requested_model: str, names: ToolNames, stops: list[str], input_estimate: int = 0) -> None:
        self.reader = SSEReader()
        self.writer = EventWriter(requested_model)
        self.names = names
        self.stops = stops
        self.input_estimate = input_estimate
        self.finish_reason: str | None = None
        self.sequence: str | None = None
        self.done = False
        self.usage: dict[str, int] = {}
        self.refused = False
        self.text_seen = False
        self.chars = 0  # streamed characters, for an output estimate when no usage comes
        self.calls: dict[Any, _Call] = {}
        self.ids: set[str] = set()
        self._unkeyed = 0

    def feed(self, chunk: bytes) -> list[Event]:
        """Consume upstream bytes; return the Anthropic events they completed."""
        for ev in self.reader.feed(chunk):
            self._event(ev)
        return self.writer.take()

    def end(self) -> list[Event]:
        """The upstream ended its body: the closing events, or StreamBroken when it was cut."""
        for ev in self.reader.close():
            self._event(ev)
        if not self.writer.finished:
            self._close()
        return self.writer.take()

    # ---------------------------------------------------------------- chunks

    def _event(self, ev: SSEEvent) -> None:
        if self.writer.finished:
            return
        data = ev.data.strip()
        if data == "[DONE]":
            self.done = True
            return
        if not data:
            return
        obj = msgspec.json.decode(data)
        if not isinstance(obj, dict):
            raise ValueError(f"a stream chunk is not a JSON object: {data[:200]!r}")
        if ev.event == "error" or ("error" in obj and not obj.get("choices")):
            self.writer.error(*stream_error(obj))
            return
        if not self.writer.started:
            self.writer.start()
        usage = anthropic_usage(obj.get("usage")) or groq_usage(obj)
        if usage:
            self.usage = usage
        choices = obj.get("choices") or []
        for choice in choices:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue  # n > 1 is never asked for; a stray choice is not ours
            delta = choice.get("delta")
            if isinstance(delta, dict):
                self._delta(delta)
            finish = choice.get("finish_reason")
            if isinstance(finish, str) and finish:
                self.finish_reason = finish
                self.sequence = stop_sequence(choice, self.stops)
        if self.finish_reason and self.usage and not choices:
            self._finish()  # the usage chunk after the finish: nothing else is coming

    def _delta(self, delta: dict[str, Any]) -> None:
        thought = reasoning_of(delta)
        if thought:
            self.chars += len(thought)
            self.writer.thinking(thought)
        text = content_text(delta.get("content"))
        if text:
            self.text_seen = True
            self.chars += len(text)
            self.writer.text(text)
        refusal = delta.get("refusal")
        if isinstance(refusal, str) and refusal:
            self.refused = True
            self.chars += len(refusal)
            self.writer.text(refusal)
        for tc in delta.get("tool_calls") or []:
            if isinstance(tc, dict):
                self._tool(tc)
        legacy = delta.get("function_call")
        if isinstance(legacy, dict):
            self._tool({"index": "function_call", "function": legacy})

    def _tool(self, tc: dict[str, Any]) -> None:
        index = tc.get("index")
        if isinstance(index, int | str):
            key: Any = index
        elif isinstance(tc.get("id"), str):
            key = tc["id"]
        else:
            self._unkeyed += 1  # no index, no id: each piece can only be a whole call
            key = ("unkeyed", self._unkeyed)
        call = self.calls.setdefault(key, _Call())
        fn = as_dict(tc.get("function"))
        if call.id is None and isinstance(tc.get("id"), str) and tc["id"]:
            call.id = tc["id"]
        if call.name is None and isinstance(fn.get("name"), str) and fn["name"]:
            call.name = fn["name"]
        args = fn.get("arguments")
        if isinstance(args, dict):
            args = json.dumps(args)
        if isinstance(args, str) and args:
            call.args.append(args)
            self.chars += len(args)
        if call.name is None:
            return  # held until its name arrives
        pending = "".join(call.args[call.fed :])
        call.fed = len(call.args)
        # Only a valid JSON prefix that can still be closed goes out (clients parse partial
        # arguments as they come); the rest waits for more text, or for the repair at the end.
        call.unsent += pending[: call.scan.feed(pending)]
        ready = call.scan.safe - call.sent_len
        good, call.unsent = call.unsent[:ready], call.unsent[ready:]
        if good:
            call.sent_parts.append(good)
            call.sent_len += len(good)
        if not call.started:
            call.started = True
            tool_id = client_tool_id(call.id, self.ids)
            self.writer.tool_call(key, id=tool_id, name=self.names.client(call.name), args=good)
        elif good:
            self.writer.tool_call(key, args=good)

    # ---------------------------------------------------------------- the end

    def _close(self) -> None:
        if not self.writer.started:
            raise StreamBroken("the upstream ended its stream before sending anything")
        if self.finish_reason is None and not self.done:
            raise StreamBroken("the upstream ended its stream without a finish reason or [DONE]")
        for call in self.calls.values():
            if not call.started:
                raise StreamBroken("the upstream sent a tool call without a name")
            if self.finish_reason is None and not _complete_json("".join(call.args)):
                raise StreamBroken(f"the upstream stream stopped inside the arguments of tool call {call.name}")
        self._finish()

    def _repair(self) -> None:
        """Complete each call's arguments so that the client's JSON is whole: the held rest
        when the arguments are valid, the repaired JSON when what was sent begins it, else
        the closing of what was sent (always a closable prefix)."""
        for key, call in self.calls.items():
            full = "".join(call.args)
            if not call.started or (call.sent == full and _complete_json(full)):
                continue
            rest: str | None = None
            if call.scan.valid and _complete_json(full):
                rest = full[len(call.sent) :]
            else:
                value = parse_arguments(full, call.name or "")
                for text in (json.dumps(value, ensure_ascii=False), json.dumps(value, ensure_ascii=False, separators=(",", ":"))):
                    if text.startswith(call.sent):
                        rest = text[len(call.sent) :]
                        break
                else:
                    scan = JsonPrefix()
                    scan.feed(call.sent)
                    rest = scan.closing() or ("{}" if not call.sent else "")
            if rest:
                try:
                    self.writer.tool_call(key, args=rest)
                except ValueError:
                    log.warning("tool call %s: its block closed before its arguments could be repaired", call.name)

    def _finish(self) -> None:
        if self.finish_reason != "length":  # a max_tokens cut is passed on as it is
            self._repair()
        saw_tools = bool(self.calls)
        reason = stop_reason(self.finish_reason, saw_tools, self.refused and not self.text_seen)
        sequence = self.sequence if reason == "end_turn" else None
        u = self.usage
        self.writer.finish(
            "stop_sequence" if sequence else reason,
            output_tokens=u["output_tokens"] if u else (self.chars + 3) // 4,
            input_tokens=u["input_tokens"] if u else self.input_estimate,
            cache_read=u.get("cache_read_input_tokens", 0) if u else 0,
            cache_write=u.get("cache_creation_input_tokens", 0) if u else 0,
            stop_sequence=sequence,
        )


def _complete_json(args: str) -> bool:
    if not args.strip():
        return True  # no arguments at all: an empty input
    try:
        json.loads(args)
    except ValueError:
        return False
    return True
