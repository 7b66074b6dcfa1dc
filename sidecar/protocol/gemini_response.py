"""Gemini `GenerateContentResponse` -> Anthropic message and SSE events, and error mapping.

One `_Reader` walks a response's parts in order and reports them to an `EventWriter`;
the streaming translator feeds it every `data:` chunk of `streamGenerateContent?alt=sse`,
the non-streaming path feeds it the one whole answer and collects the events into a
message, so both give the same content for the same parts.

- thought parts (`thought: true`) -> thinking; text -> text; `functionCall` (whole, in one
  chunk) -> tool_use with a fresh `toolu_` id (or Gemini's own `id` when it sends one) and
  the client's tool name;
- `thoughtSignature` -> a `gemini:` signature on a thinking block (see `protocol.gemini`):
  a thought's own on its thinking block, a function call's on a block just before the
  tool_use, a text's on a block after the text once more content follows (the signature
  of the answer's last text is dropped: Gemini does not require it back, and a thinking
  block after the final text would hide that text from Claude Code's result);
- `usageMetadata` -> usage: promptTokenCount includes cachedContentTokenCount, so
  input = prompt - cached (+ tool-use prompt), cache_read = cached,
  output = candidates + thoughts;
- `finishReason` -> stop_reason: STOP -> end_turn (tool_use after a function call),
  MAX_TOKENS -> max_tokens, the safety family -> refusal; a malformed or unexpected
  function call is an error, not an answer. A blocked prompt (`promptFeedback`) is a refusal.
  Gemini does not say which stop sequence ended an answer, so that reads as end_turn.
- A stream that ends without a finishReason was cut: `end()` raises StreamBroken.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from sidecar.errors import STATUS_ERROR_TYPES, StreamBroken, error_type_for
from sidecar.protocol import sse
from sidecar.protocol.anthropic_stream import Event, EventWriter, new_id
from sidecar.protocol.gemini import NEXT_SIG, PREV_SIG, THOUGHT_SIG
from sidecar.protocol.gemini_tools import ToolNames

REFUSALS = frozenset(
    {
        "SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "LANGUAGE",
        "IMAGE_SAFETY", "IMAGE_PROHIBITED_CONTENT", "IMAGE_RECITATION",
    }
)  # fmt: skip
FAILURES = frozenset(
    {"MALFORMED_FUNCTION_CALL", "UNEXPECTED_TOOL_CALL", "TOO_MANY_TOOL_CALLS", "MISSING_THOUGHT_SIGNATURE", "MALFORMED_RESPONSE"}
)
_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
# Google RPC status -> (its HTTP status, the Anthropic error type for the same case); Gemini
# uses it when the HTTP status is odd, Vertex (sidecar.providers.vertex) for every error.
GOOGLE_ERRORS: dict[str, tuple[int, str]] = {
    "INVALID_ARGUMENT": (400, "invalid_request_error"),
    "FAILED_PRECONDITION": (400, "invalid_request_error"),
    "OUT_OF_RANGE": (400, "invalid_request_error"),
    "UNAUTHENTICATED": (401, "authentication_error"),
    "PERMISSION_DENIED": (403, "permission_error"),
    "NOT_FOUND": (404, "not_found_error"),
    "ABORTED": (409, "invalid_request_error"),
    "ALREADY_EXISTS": (409, "invalid_request_error"),
    "RESOURCE_EXHAUSTED": (429, "rate_limit_error"),
    "CANCELLED": (499, "api_error"),
    "INTERNAL": (500, "api_error"),
    "UNKNOWN": (500, "api_error"),
    "UNAVAILABLE": (503, "overloaded_error"),
    "DEADLINE_EXCEEDED": (504, "timeout_error"),
}
_TOO_LONG = re.compile(r"input token count \(?(\d+)\)? exceeds the maximum number of tokens allowed \(?(\d+)\)?", re.I)


class AnswerError(ValueError):
    """A Gemini answer that is an error for the client (e.g. a malformed function call)."""

    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message


class _Reader:
    """The state of one response: reports parts to the writer, remembers finish and usage."""

    def __init__(self, model: str, names: ToolNames) -> None:
        self.w = EventWriter(model)
        self.names = names
        self.usage: dict[str, Any] = {}
        self.finish_reason: str | None = None
        self.finish_message = ""
        self.calls = 0
        self.text_signature: str | None = None  # held until more content follows the text
        self._ids: set[str] = set()

    def chunk(self, obj: Any) -> None:
        """Take one GenerateContentResponse (a stream chunk or the whole answer)."""
        if not isinstance(obj, dict):
            raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
        if isinstance(obj.get("error"), dict):
            _, etype, message = error_parts(int(obj["error"].get("code") or 500), obj)
            self.w.error(etype, message)
            return
        if isinstance(obj.get("usageMetadata"), dict):
            self.usage = obj["usageMetadata"]
        if not self.w.started:
            u = anthropic_usage(self.usage)
            self.w.start(u["input_tokens"], u["cache_read_input_tokens"])
        feedback = obj.get("promptFeedback")
        if isinstance(feedback, dict) and feedback.get("blockReason"):
            self.finish_reason = "PROMPT_BLOCKED"
            self.finish_message = str(feedback["blockReason"])
        candidates = obj.get("candidates")
        if not isinstance(candidates, list) or not candidates:
            return
        cand = candidates[0]
        content = cand.get("content") if isinstance(cand, dict) else None
        for part in content.get("parts") or [] if isinstance(content, dict) else []:
            if isinstance(part, dict):
                self.part(part)
        if isinstance(cand, dict) and isinstance(cand.get("finishReason"), str):
            self.finish_reason = cand["finishReason"]
            self.finish_message = str(cand.get("finishMessage") or "")

    def part(self, p: dict[str, Any]) -> None:
        """One part, in order."""
        sig = p.get("thoughtSignature") if isinstance(p.get("thoughtSignature"), str) else None
        if p.get("thought") is True:
            thinking = str(p.get("text") or "")
            if thinking or sig:
                self._flush_text_signature()
            self.w.thinking(thinking)
            if sig:
                self.w.signature(THOUGHT_SIG + sig)
        elif isinstance(p.get("functionCall"), dict):
            self._flush_text_signature()
            if sig:
                self.w.signature(NEXT_SIG + sig)
            self._call(p["functionCall"])
        else:
            out = _text_of(p)
            if out:
                self._flush_text_signature()
                self.w.text(out)
            if sig:
                self.text_signature = sig

    def _flush_text_signature(self) -> None:
        """A text's signature goes out once more content follows it (see the module doc)."""
        if self.text_signature is not None:
            self.w.signature(PREV_SIG + self.text_signature)
            self.text_signature = None

    def _call(self, fc: dict[str, Any]) -> None:
        name = fc.get("name")
        if not isinstance(name, str) or not name:
            raise ValueError("a functionCall without a name")
        args = fc.get("args") if fc.get("args") is not None else {}
        if not isinstance(args, dict):
            raise ValueError(f"functionCall {name!r} has args that are not an object")
        tool_id = fc.get("id") if isinstance(fc.get("id"), str) and _ID_RE.match(fc["id"]) else None
        if tool_id is None or tool_id in self._ids:
            tool_id = new_id("toolu_")
        self._ids.add(tool_id)
        self.calls += 1
        self.w.tool_call(self.calls, id=tool_id, name=self.names.original(name), args=msgspec.json.encode(args).decode())

    def finish(self) -> None:
        """Close the message from the finish reason and usage seen (raises StreamBroken when none)."""
        if self.w.finished:
            return
        reason = self.finish_reason
        if reason is None:
            if self.w.in_tool_arguments:
                raise StreamBroken("the Gemini stream ended during a function call, without a finishReason")
            raise StreamBroken("the Gemini stream ended without a finishReason (cut short)")
        if reason in FAILURES:
            detail = f": {self.finish_message}" if self.finish_message else ""
            self.w.error("api_error", f"Gemini stopped with {reason}{detail}")
            return
        u = anthropic_usage(self.usage)
        self.w.finish(
            stop_reason(reason, self.calls),
            output_tokens=u["output_tokens"],
            input_tokens=u["input_tokens"],
            cache_read=u["cache_read_input_tokens"],
            cache_write=0,
        )


def _text_of(p: dict[str, Any]) -> str:
    if isinstance(p.get("text"), str):
        return str(p["text"])
    if isinstance(p.get("executableCode"), dict):
        code = p["executableCode"]
        return f"\n```{str(code.get('language', '')).lower()}\n{code.get('code', '')}\n```\n"
    if isinstance(p.get("codeExecutionResult"), dict):
        return f"\n```\n{p['codeExecutionResult'].get('output', '')}\n```\n"
    for kind in ("inlineData", "fileData"):
        if isinstance(p.get(kind), dict):
            mime = p[kind].get("mimeType", "data")
            return f"[Gemini answered with {mime} content that an Anthropic message cannot carry]"
    return ""


def stop_reason(finish: str, calls: int) -> str:
    """The Anthropic stop_reason for a Gemini finishReason."""
    if finish == "MAX_TOKENS":
        return "max_tokens"
    if finish in REFUSALS or finish == "PROMPT_BLOCKED":
        return "refusal"
    return "tool_use" if calls else "end_turn"


def anthropic_usage(meta: dict[str, Any]) -> dict[str, int]:
    """Anthropic usage for Gemini `usageMetadata` (cached tokens are part of the prompt count)."""

    def n(key: str) -> int:
        v = meta.get(key)
        return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else 0

    cached = min(n("cachedContentTokenCount"), n("promptTokenCount"))
    return {
        "input_tokens": n("promptTokenCount") - cached + n("toolUsePromptTokenCount"),
        "cache_read_input_tokens": cached,
        "output_tokens": n("candidatesTokenCount") + n("thoughtsTokenCount"),
    }


# -- whole answers and streams -------------------------------------------------------------


def message(body: bytes, model: str, names: ToolNames) -> dict[str, Any]:
    """A non-streaming generateContent answer as an Anthropic message (raises AnswerError,
    or ValueError for an answer that cannot be read)."""
    obj = msgspec.json.decode(body)
    if not isinstance(obj, dict):
        raise ValueError("the answer is not a JSON object")
    if not obj.get("candidates") and not obj.get("promptFeedback"):
        raise ValueError("the answer has no candidates")
    r = _Reader(model, names)
    r.chunk(obj)
    try:
        r.finish()
    except StreamBroken:
        raise ValueError("the answer has no finishReason") from None
    return collect(r.w.take())


def collect(events: list[Event]) -> dict[str, Any]:
    """The message a client accumulates from `events` (what the SDK's stream helper builds)."""
    msg: dict[str, Any] = {}
    args: dict[int, list[str]] = {}
    for name, data in events:
        if name == "error":
            err = data["error"]
            raise AnswerError(502, err["type"], err["message"])
        if name == "message_start":
            msg = {**data["message"], "content": [], "usage": dict(data["message"]["usage"])}
        elif name == "content_block_start":
            msg["content"].append(dict(data["content_block"]))
        elif name == "content_block_delta":
            block, delta = msg["content"][data["index"]], data["delta"]
            if delta["type"] == "text_delta":
                block["text"] += delta["text"]
            elif delta["type"] == "thinking_delta":
                block["thinking"] += delta["thinking"]
            elif delta["type"] == "signature_delta":
                block["signature"] = delta["signature"]
            elif delta["type"] == "input_json_delta":
                args.setdefault(data["index"], []).append(delta["partial_json"])
        elif name == "content_block_stop" and data["index"] in args:
            msg["content"][data["index"]]["input"] = msgspec.json.decode("".join(args.pop(data["index"])))
        elif name == "message_delta":
            msg.update(data["delta"])
            msg["usage"].update(data["usage"])
    return msg


class StreamTranslator:
    """`streamGenerateContent?alt=sse` bytes -> Anthropic events, incrementally."""

    def __init__(self, model: str, names: ToolNames) -> None:
        self.reader = sse.SSEReader()
        self.r = _Reader(model, names)

    def feed(self, chunk: bytes) -> list[Event]:
        """Consume upstream bytes (any boundaries); the Anthropic events they completed."""
        self._events(self.reader.feed(chunk))
        return self.r.w.take()

    def end(self) -> list[Event]:
        """The upstream ended: the closing events, or StreamBroken when it was cut."""
        self._events(self.reader.close())
        self.r.finish()
        return self.r.w.take()

    def _events(self, events: list[sse.Event]) -> None:
        for ev in events:
            if self.r.w.finished:
                return  # an error ended the answer; nothing after it counts
            if ev.data.strip():
                self.r.chunk(ev.json())


# -- errors --------------------------------------------------------------------------------


def error_parts(status: int, obj: Any) -> tuple[int, str, str]:
    """(status, Anthropic error type, message) for a Gemini error body already decoded."""
    err = obj.get("error") if isinstance(obj, dict) else None
    if not isinstance(err, dict):
        return status, error_type_for(status), f"Gemini answered HTTP {status}"
    message = str(err.get("message") or f"Gemini answered HTTP {status}")
    google = err.get("status")
    # An odd HTTP status (one the API does not use, nor a 503) defers to Google's status name.
    if status not in STATUS_ERROR_TYPES and status != 503 and isinstance(google, str) and google in GOOGLE_ERRORS:
        status, etype = GOOGLE_ERRORS[google]
    else:
        etype = error_type_for(status)
    m = _TOO_LONG.search(message)
    if m:
        # Claude Code recognises Anthropic's wording and offers to compact the conversation.
        message = f"prompt is too long: {m[1]} tokens > {m[2]} maximum (Gemini: {message})"
    return status, etype, message


def map_error(status: int, body: bytes) -> tuple[int, str, str]:
    """An upstream error answer as (status, Anthropic error type, message)."""
    try:
        obj = msgspec.json.decode(body)
    except msgspec.DecodeError:
        text = body.decode("utf-8", "replace").strip()[:500]
        st, etype, _ = error_parts(status, None)
        return st, etype, f"Gemini answered HTTP {status}: {text}" if text else f"Gemini answered HTTP {status}"
    return error_parts(status, obj)


def retry_after(body: bytes) -> int | None:
    """Seconds from a RetryInfo detail (`"retryDelay": "37s"`) of an error body, if any."""
    try:
        obj = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return None
    err = obj.get("error") if isinstance(obj, dict) else None
    details = err.get("details") if isinstance(err, dict) else None
    for d in details if isinstance(details, list) else []:
        delay = d.get("retryDelay") if isinstance(d, dict) else None
        m = re.match(r"^(\d+(?:\.\d+)?)s$", delay) if isinstance(delay, str) else None
        if m:
            return max(1, round(float(m[1]) + 0.499))
    return None
