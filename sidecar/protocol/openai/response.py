"""Chat Completions answers as Anthropic: a whole message, usage, stop reasons, tool-call
arguments, and error bodies mapped to the Anthropic error envelope."""

from __future__ import annotations

import ast
import json
import logging
import re
from typing import Any

import msgspec

from sidecar.errors import error_type_for
from sidecar.protocol.anthropic_stream import new_id
from sidecar.protocol.openai.jsonprefix import close_prefix
from sidecar.protocol.openai.names import ToolNames, client_tool_id

log = logging.getLogger(__name__)

FINISH_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
_TRAILING_COMMA = re.compile(r",\s*([}\]])")


def as_dict(value: Any) -> dict[str, Any]:
    """`value` when it is a JSON object, else an empty one (answers are read defensively)."""
    return value if isinstance(value, dict) else {}


def error_message(body: bytes, status: int) -> str:
    """The message of an OpenAI-format error body, whatever its shape (OpenAI, vLLM, Ollama,
    FastAPI's `detail`), else the body text, else the status."""
    try:
        obj: Any = msgspec.json.decode(body)
    except msgspec.DecodeError:
        text = body.decode("utf-8", "replace").strip()
        return text[:2000] or f"upstream answered HTTP {status}"
    err = obj.get("error", obj) if isinstance(obj, dict) else obj
    if isinstance(err, str):
        return err
    if isinstance(err, dict):
        for key in ("message", "detail", "msg"):
            value = err.get(key)
            if isinstance(value, str) and value:
                return value
            if isinstance(value, list | dict):
                return json.dumps(value)
    return json.dumps(obj)[:2000]


def translate_error(status: int, body: bytes) -> tuple[int, str, str]:
    """(status for the client, Anthropic error type, the upstream's message)."""
    out_status = 400 if status == 422 else status
    return out_status, error_type_for(status), error_message(body, status)


def stream_error(payload: dict[str, Any]) -> tuple[str, str]:
    """The Anthropic (type, message) of an error object sent inside a stream."""
    err = payload.get("error")
    code = err.get("code") if isinstance(err, dict) else None
    status = code if isinstance(code, int) else 500
    kind = err.get("type") if isinstance(err, dict) else None
    etype = error_type_for(status)
    if status == 500 and isinstance(kind, str):
        if "rate" in kind:
            etype = "rate_limit_error"
        elif "overload" in kind:
            etype = "overloaded_error"
    return etype, error_message(msgspec.json.encode(payload), status)


def anthropic_usage(usage: Any) -> dict[str, int]:
    """Anthropic usage from an OpenAI `usage` object: prompt_tokens includes cached (and
    cache-written) tokens, Anthropic's input_tokens does not."""
    if not isinstance(usage, dict):
        return {}
    prompt = _int(usage.get("prompt_tokens"))
    details = as_dict(usage.get("prompt_tokens_details"))
    cached = _int(details.get("cached_tokens")) or _int(usage.get("prompt_cache_hit_tokens"))
    written = _int(details.get("cache_write_tokens")) or _int(usage.get("cache_creation_input_tokens"))
    return {
        "input_tokens": max(prompt - cached - written, 0),
        "output_tokens": _int(usage.get("completion_tokens")),
        "cache_read_input_tokens": cached,
        "cache_creation_input_tokens": written,
    }


def groq_usage(obj: dict[str, Any]) -> dict[str, int]:
    """Usage where Groq puts it in streams (`x_groq.usage`)."""
    extra = obj.get("x_groq")
    return anthropic_usage(extra.get("usage")) if isinstance(extra, dict) else {}


def _int(v: Any) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else 0


def stop_reason(finish: Any, saw_tools: bool, refused: bool) -> str:
    """Anthropic's stop_reason for an OpenAI finish_reason."""
    if refused and finish != "length":
        return "refusal"
    reason = FINISH_REASONS.get(finish, "end_turn") if isinstance(finish, str) else "end_turn"
    if saw_tools and reason == "end_turn":
        return "tool_use"  # servers that report "stop" after calling tools
    if reason == "tool_use" and not saw_tools:
        return "end_turn"
    return reason


def stop_sequence(choice: dict[str, Any], stops: list[str]) -> str | None:
    """The stop sequence that ended the answer, when the server says which (vLLM's stop_reason)."""
    matched = choice.get("stop_reason")
    return matched if isinstance(matched, str) and matched in stops else None


def parse_arguments(raw: Any, name: str, repair: bool = True) -> dict[str, Any]:
    """A tool call's input from its JSON arguments, tolerating what open models send: empty
    arguments, trailing commas, a missing closing brace, Python-style quoting, JSON encoded
    twice. What still cannot
    be read becomes {} (and is logged): the client then reports invalid parameters instead of
    running a guessed command. With `repair` off (the answer hit max_tokens) arguments that
    were cut short are not closed into a shorter, valid input: a truncated Write must not
    look whole."""
    if isinstance(raw, dict):
        return raw
    if not isinstance(raw, str) or not raw.strip():
        return {}
    value: Any = None
    for attempt in (raw, _TRAILING_COMMA.sub(r"\1", raw)):
        try:
            value = json.loads(attempt)
            break
        except ValueError:
            continue
    else:
        try:
            value = ast.literal_eval(raw.strip())
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            closed = close_prefix(raw) if repair else None  # cut short, or junk after a good beginning
            value = json.loads(closed) if closed else None
    if isinstance(value, str):
        return parse_arguments(value, name, repair) if value.strip().startswith("{") else {}
    if isinstance(value, dict):
        return value
    log.warning("tool call %s: arguments are not a JSON object, sent as {}: %.200r", name, raw)
    return {}


def reasoning_of(obj: dict[str, Any]) -> str:
    """The reasoning text of a message or delta (`reasoning_content` or `reasoning`)."""
    for key in ("reasoning_content", "reasoning"):
        value = obj.get(key)
        if isinstance(value, str) and value:
            return value
    return ""


def content_text(content: Any) -> str:
    """Message content as text (a string, or a list of text parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def translate_message(raw: bytes, requested_model: str, names: ToolNames, stops: list[str]) -> dict[str, Any]:
    """A non-streaming Chat Completions answer as an Anthropic message."""
    obj = msgspec.json.decode(raw)
    if not isinstance(obj, dict):
        raise ValueError("the answer is not a JSON object")
    choices = obj.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        if "error" in obj:
            raise ValueError(f"the upstream reported an error: {error_message(raw, 500)}")
        raise ValueError("the answer has no choices")
    choice = choices[0]
    msg = as_dict(choice.get("message"))
    content: list[dict[str, Any]] = []
    thought = reasoning_of(msg)
    if thought:
        # Not Anthropic's: no signature is invented for it.
        content.append({"type": "thinking", "thinking": thought, "signature": ""})
    text = content_text(msg.get("content"))
    refusal = msg.get("refusal") if isinstance(msg.get("refusal"), str) else ""
    if text or refusal:
        content.append({"type": "text", "text": "\n".join(x for x in (text, refusal) if x)})
    seen: set[str] = set()
    repair = choice.get("finish_reason") != "length"
    for call in msg.get("tool_calls") or []:
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise ValueError("a tool call has no function name")
        name = names.client(fn["name"])
        content.append(
            {"type": "tool_use", "id": client_tool_id(call.get("id"), seen), "name": name, "input": parse_arguments(fn.get("arguments"), name, repair)}
        )
    saw_tools = any(b["type"] == "tool_use" for b in content)
    reason = stop_reason(choice.get("finish_reason"), saw_tools, bool(refusal) and not text)
    sequence = stop_sequence(choice, stops) if reason == "end_turn" else None
    usage = anthropic_usage(obj.get("usage")) or groq_usage(obj)
    return {
        "id": new_id("msg_"),
        "type": "message",
        "role": "assistant",
        "model": requested_model,
        "content": content,
        "stop_reason": "stop_sequence" if sequence else reason,
        "stop_sequence": sequence,
        "usage": usage or {"input_tokens": 0, "output_tokens": 0, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0},
    }
