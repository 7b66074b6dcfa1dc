"""Bedrock Converse / ConverseStream <-> Anthropic Messages, for Bedrock models that do not
speak Anthropic (Nova, Llama, Mistral, DeepSeek, ...).

Request (Anthropic -> Converse):
- `system` (string or blocks) and `role: "system"` messages -> `system` text blocks;
- text, base64 images (png/jpeg/gif/webp) and documents (base64 PDF or plain text) ->
  `text`, `image`, `document` blocks; URL sources are refused with a clear 400 (Converse
  takes bytes only);
- tool_use / tool_result -> `toolUse` / `toolResult` (`status: "error"` for `is_error`,
  several results in one turn stay in one user turn, an empty result is `[{"text": ""}]`);
- thinking blocks of earlier turns are not replayed (their signatures belong to another
  model); consecutive turns of one role are merged (Converse wants them alternating);
- tool names outside `[a-zA-Z0-9_-]{1,64}` are shortened to 55 characters + `_` + 8 hex of
  their SHA-256 and restored in the answer; tool ids are made to fit the same pattern;
- tool_choice auto/any/tool -> `toolChoice`; `none` sends no choice (and no tools when the
  conversation has no tool turns); `disable_parallel_tool_use` has no Converse equivalent;
- max_tokens, temperature, top_p, stop_sequences -> `inferenceConfig`; `top_k`, `metadata`,
  `thinking` and `cache_control` are model specific and not sent (with the `cache_points`
  option, `cache_control` becomes a `cachePoint` after the block it marks).

Response: text / toolUse / reasoningContent -> text / tool_use / thinking (or
redacted_thinking); stopReason -> stop_reason; usage (Converse's `inputTokens` excludes cache
reads and writes, as Anthropic's `input_tokens` does). The client's model is echoed.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

import msgspec

from sidecar.errors import StreamBroken, error_type_for
from sidecar.protocol.anthropic_stream import EventWriter, new_id
from sidecar.protocol.eventstream import EventStreamDecoder, Message

_NAME_OK = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_BAD_CHARS = re.compile(r"[^a-zA-Z0-9_-]")
_DOC_NAME_BAD = re.compile(r"[^a-zA-Z0-9 \-()\[\]]")
IMAGE_FORMATS = {"image/png": "png", "image/jpeg": "jpeg", "image/jpg": "jpeg", "image/gif": "gif", "image/webp": "webp"}
STOP_REASONS = {
    "end_turn": "end_turn",
    "tool_use": "tool_use",
    "max_tokens": "max_tokens",
    "stop_sequence": "stop_sequence",
    "guardrail_intervened": "refusal",
    "content_filtered": "refusal",
    "model_context_window_exceeded": "model_context_window_exceeded",
}


class ConverseRequestError(ValueError):
    """The Anthropic request has something Converse cannot carry (answered as a 400)."""


def short_name(name: str) -> str:
    """A tool name Converse accepts: unchanged when valid, else 55 safe characters + `_` + hash."""
    if _NAME_OK.match(name):
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return _BAD_CHARS.sub("_", name)[:55] + "_" + digest


def safe_id(tool_id: str) -> str:
    """A toolUseId Converse accepts (same pattern as names)."""
    return short_name(tool_id) if tool_id else new_id("toolu_")


@dataclass
class ToolNames:
    """The request's shortened tool names, to restore them in the answer."""

    original: dict[str, str] = field(default_factory=dict)  # short -> original

    def add(self, name: str) -> str:
        """The name to send for `name` (remembered for the answer)."""
        short = short_name(name or "unnamed_tool")
        self.original[short] = name or "unnamed_tool"
        return short

    def restore(self, name: str) -> str:
        """The client's name for a name the upstream sent."""
        return self.original.get(name, name)


# ---------------------------------------------------------------- request


def _text_blocks(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    if isinstance(content, list):
        return [b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text"]
    return []


def _cache_point(block: dict[str, Any], cache_points: bool) -> list[dict[str, Any]]:
    return [{"cachePoint": {"type": "default"}}] if cache_points and block.get("cache_control") else []


def _image(block: dict[str, Any]) -> dict[str, Any]:
    src = block.get("source") or {}
    if src.get("type") != "base64":
        raise ConverseRequestError(
            f"Bedrock Converse takes images as bytes; an image with a {src.get('type')!r} source cannot be sent"
        )
    fmt = IMAGE_FORMATS.get(str(src.get("media_type", "")).lower())
    if fmt is None:
        raise ConverseRequestError(f"Bedrock Converse does not take images of type {src.get('media_type')!r}")
    return {"image": {"format": fmt, "source": {"bytes": src.get("data", "")}}}


def _document(block: dict[str, Any], n: int) -> dict[str, Any]:
    src = block.get("source") or {}
    title = str(block.get("title") or f"document {n}")
    name = " ".join(_DOC_NAME_BAD.sub(" ", title).split())[:200] or f"document {n}"
    if src.get("type") == "base64" and src.get("media_type") == "application/pdf":
        return {"document": {"format": "pdf", "name": name, "source": {"bytes": src.get("data", "")}}}
    if src.get("type") == "text":
        data = base64.b64encode(str(src.get("data", "")).encode()).decode()
        return {"document": {"format": "txt", "name": name, "source": {"bytes": data}}}
    raise ConverseRequestError(
        f"Bedrock Converse cannot take a document with a {src.get('type')!r} source "
        f"({src.get('media_type')!r}); send a base64 PDF or plain text"
    )


def _tool_result(block: dict[str, Any], cache_points: bool) -> dict[str, Any]:
    content = block.get("content")
    out: list[dict[str, Any]] = []
    if isinstance(content, str):
        out.append({"text": content})
    elif isinstance(content, list):
        for b in content:
            if not isinstance(b, dict):
                continue
            if b.get("type") == "text":
                out.append({"text": b.get("text", "")})
            elif b.get("type") == "image":
                out.append(_image(b))
            elif b.get("type") == "document":
                out.append(_document(b, 1))
    if not out:
        out.append({"text": ""})
    result: dict[str, Any] = {"toolUseId": safe_id(str(block.get("tool_use_id", ""))), "content": out}
    if block.get("is_error"):
        result["status"] = "error"
    return {"toolResult": result}


def _blocks(content: Any, names: ToolNames, cache_points: bool) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"text": content}] if content else []
    out: list[dict[str, Any]] = []
    docs = 0
    for b in content if isinstance(content, list) else []:
        if not isinstance(b, dict):
            continue
        kind = b.get("type")
        if kind == "text":
            if b.get("text"):
                out.append({"text": b["text"]})
        elif kind == "image":
            out.append(_image(b))
        elif kind == "document":
            docs += 1
            out.append(_document(b, docs))
        elif kind == "tool_use":
            out.append(
                {"toolUse": {"toolUseId": safe_id(str(b.get("id", ""))), "name": names.add(str(b.get("name", ""))),
                             "input": b.get("input") if isinstance(b.get("input"), dict) else {}}}
            )  # fmt: skip
        elif kind == "tool_result":
            out.append(_tool_result(b, cache_points))
        else:
            continue  # thinking, redacted_thinking and server tool blocks are not replayed
        out.extend(_cache_point(b, cache_points))
    return out


def _merge(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for m in messages:
        if not m["content"]:
            continue
        if out and out[-1]["role"] == m["role"]:
            out[-1] = {"role": m["role"], "content": out[-1]["content"] + m["content"]}
        else:
            out.append(m)
    return out


def _tool_config(body: dict[str, Any], names: ToolNames, has_tool_turns: bool) -> dict[str, Any] | None:
    tools = []
    for t in body.get("tools") or []:
        if not isinstance(t, dict) or t.get("type") not in (None, "custom"):
            continue  # server tools (web search, code execution) have no Converse form
        spec: dict[str, Any] = {"name": names.add(str(t.get("name", ""))), "inputSchema": {"json": t.get("input_schema") or {"type": "object"}}}
        if t.get("description"):
            spec["description"] = t["description"]
        tools.append({"toolSpec": spec})
    choice = body.get("tool_choice") or {}
    kind = choice.get("type") if isinstance(choice, dict) else None
    if not tools or (kind == "none" and not has_tool_turns):
        return None
    cfg: dict[str, Any] = {"tools": tools}
    if kind == "any":
        cfg["toolChoice"] = {"any": {}}
    elif kind == "tool":
        cfg["toolChoice"] = {"tool": {"name": names.add(str(choice.get("name", "")))}}
    elif kind == "auto":
        cfg["toolChoice"] = {"auto": {}}
    return cfg


def to_converse(body: dict[str, Any], *, cache_points: bool = False) -> tuple[dict[str, Any], ToolNames]:
    """The Converse request body for an Anthropic request, and the tool-name map."""
    names = ToolNames()
    system: list[dict[str, Any]] = []
    raw_system = body.get("system")
    if isinstance(raw_system, str) and raw_system:
        system.append({"text": raw_system})
    elif isinstance(raw_system, list):
        for b in raw_system:
            if isinstance(b, dict) and b.get("type") == "text" and b.get("text"):
                system.append({"text": b["text"]})
                system.extend(_cache_point(b, cache_points))
    messages: list[dict[str, Any]] = []
    for m in body.get("messages") or []:
        if not isinstance(m, dict):
            raise ConverseRequestError("each entry of `messages` must be an object")
        role = m.get("role")
        if role == "system":
            system.extend({"text": t} for t in _text_blocks(m.get("content")) if t)
            continue
        if role not in ("user", "assistant"):
            raise ConverseRequestError(f"unknown message role {role!r}")
        messages.append({"role": role, "content": _blocks(m.get("content"), names, cache_points)})
    messages = _merge(messages)
    out: dict[str, Any] = {"messages": messages}
    if system:
        out["system"] = system
    inference: dict[str, Any] = {}
    for src, dst in (("max_tokens", "maxTokens"), ("temperature", "temperature"), ("top_p", "topP"), ("stop_sequences", "stopSequences")):
        if body.get(src) is not None:
            inference[dst] = body[src]
    if inference:
        out["inferenceConfig"] = inference
    has_tool_turns = any("toolUse" in b or "toolResult" in b for m in messages for b in m["content"])
    tool_config = _tool_config(body, names, has_tool_turns)
    if tool_config is not None:
        out["toolConfig"] = tool_config
    return out, names


def count_tokens_input(converse: dict[str, Any]) -> dict[str, Any]:
    """The CountTokens `input` for a Converse request."""
    keep = {k: converse[k] for k in ("messages", "system", "toolConfig") if k in converse}
    return {"converse": keep}


# ---------------------------------------------------------------- response


def usage(u: dict[str, Any]) -> dict[str, int]:
    """Converse usage as Anthropic usage."""
    return {
        "input_tokens": int(u.get("inputTokens") or 0),
        "output_tokens": int(u.get("outputTokens") or 0),
        "cache_read_input_tokens": int(u.get("cacheReadInputTokens") or 0),
        "cache_creation_input_tokens": int(u.get("cacheWriteInputTokens") or 0),
    }


def stop_reason(reason: Any) -> str:
    """A Converse stopReason as an Anthropic stop_reason."""
    return STOP_REASONS.get(str(reason), "end_turn")


def _stop_sequence(fields: Any) -> str | None:
    if isinstance(fields, dict) and isinstance(fields.get("stop_sequence"), str):
        return str(fields["stop_sequence"])
    return None


def to_message(data: dict[str, Any], requested_model: str, names: ToolNames) -> dict[str, Any]:
    """A Converse answer as an Anthropic message."""
    msg = data["output"]["message"]
    content: list[dict[str, Any]] = []
    for b in msg.get("content") or []:
        if "text" in b:
            if b["text"]:
                content.append({"type": "text", "text": b["text"]})
        elif "toolUse" in b:
            tu = b["toolUse"]
            content.append({"type": "tool_use", "id": tu.get("toolUseId") or new_id("toolu_"), "name": names.restore(tu["name"]), "input": tu.get("input") or {}})
        elif "reasoningContent" in b:
            rc = b["reasoningContent"]
            if "redactedContent" in rc:
                content.append({"type": "redacted_thinking", "data": rc["redactedContent"]})
            else:
                rt = rc.get("reasoningText") or {}
                content.append({"type": "thinking", "thinking": rt.get("text", ""), "signature": rt.get("signature", "")})
    return {
        "id": new_id("msg_"),
        "type": "message",
        "role": "assistant",
        "model": requested_model,
        "content": content,
        "stop_reason": stop_reason(data.get("stopReason")),
        "stop_sequence": _stop_sequence(data.get("additionalModelResponseFields")),
        "usage": usage(data.get("usage") or {}),
    }


# ---------------------------------------------------------------- errors

# AWS error code (header x-amzn-ErrorType, body __type, or stream :exception-type) ->
# the status and error.type the Anthropic API would use for the same condition.
AWS_ERRORS: dict[str, tuple[int, str]] = {
    "ValidationException": (400, "invalid_request_error"),
    "ConflictException": (409, "invalid_request_error"),
    "AccessDeniedException": (403, "permission_error"),
    "UnrecognizedClientException": (401, "authentication_error"),
    "InvalidSignatureException": (401, "authentication_error"),
    "IncompleteSignatureException": (401, "authentication_error"),
    "MissingAuthenticationTokenException": (401, "authentication_error"),
    "ExpiredTokenException": (401, "authentication_error"),
    "ResourceNotFoundException": (404, "not_found_error"),
    "ThrottlingException": (429, "rate_limit_error"),
    "ServiceQuotaExceededException": (429, "rate_limit_error"),
    "ModelTimeoutException": (504, "timeout_error"),
    "ModelNotReadyException": (529, "overloaded_error"),
    "ServiceUnavailableException": (529, "overloaded_error"),
    "InternalServerException": (500, "api_error"),
    "ModelErrorException": (500, "api_error"),
    "ModelStreamErrorException": (500, "api_error"),
}


def error_code(header: str | None, body: Any) -> str | None:
    """The AWS error code from `x-amzn-ErrorType` (`Name:namespace`) or a body `__type`/`code`."""
    raw = header or (body.get("__type") or body.get("code") if isinstance(body, dict) else None)
    if not raw:
        return None
    name = str(raw).split(":", 1)[0].rsplit("#", 1)[-1]
    return name[:1].upper() + name[1:]


def map_error(status: int, code: str | None, body: bytes) -> tuple[int, str, str]:
    """An AWS error answer as (status, Anthropic error type, the provider's message)."""
    try:
        data = msgspec.json.decode(body)
    except msgspec.DecodeError:
        data = None
    code = code or error_code(None, data)
    message = ""
    if isinstance(data, dict):
        message = str(data.get("message") or data.get("Message") or "")
    if not message:
        message = body.decode("utf-8", errors="replace").strip() or f"HTTP {status}"
    if code in AWS_ERRORS:
        st, etype = AWS_ERRORS[code]
        return st, etype, message
    if status >= 500:
        return (529, "overloaded_error", message) if status == 503 else (500, "api_error", message)
    return status, error_type_for(status), message


# ---------------------------------------------------------------- streaming


class ConverseStreamTranslator:
    """ConverseStream event-stream bytes -> Anthropic SSE events (via EventWriter)."""

    def __init__(self, requested_model: str, names: ToolNames) -> None:
        self.writer = EventWriter(requested_model)
        self.names = names
        self.decoder = EventStreamDecoder()
        self.stop: str | None = None
        self.stop_sequence: str | None = None

    def feed(self, chunk: bytes) -> list[tuple[str, dict[str, Any]]]:
        """Consume upstream bytes; the Anthropic events completed so far."""
        for msg in self.decoder.feed(chunk):
            self._message(msg)
        return self.writer.take()

    def end(self) -> list[tuple[str, dict[str, Any]]]:
        """The upstream ended: finish, or raise StreamBroken if it was cut."""
        w = self.writer
        if self.decoder.partial:
            raise StreamBroken("Bedrock ConverseStream ended inside an event-stream message")
        if not w.finished:
            if self.stop is None:
                raise StreamBroken("Bedrock ConverseStream ended without messageStop")
            w.finish(self.stop, stop_sequence=self.stop_sequence)
        return w.take()

    def _message(self, msg: Message) -> None:
        w = self.writer
        if w.finished:
            return
        data = msgspec.json.decode(msg.payload) if msg.payload else {}
        if msg.message_type == "exception":
            _, etype, message = map_error(500, error_code(msg.exception_type, None), msg.payload)
            w.error(etype, message)
            return
        if msg.message_type == "error":
            w.error("api_error", str(msg.headers.get(":error-message") or msg.headers.get(":error-code") or "stream error"))
            return
        kind = msg.event_type
        if kind == "messageStart":
            w.start()
        elif kind == "contentBlockStart":
            tu = (data.get("start") or {}).get("toolUse")
            if tu:
                w.tool_call(data.get("contentBlockIndex"), id=tu.get("toolUseId"), name=self.names.restore(tu["name"]))
        elif kind == "contentBlockDelta":
            self._delta(data.get("contentBlockIndex"), data.get("delta") or {})
        elif kind == "messageStop":
            self.stop = stop_reason(data.get("stopReason"))
            self.stop_sequence = _stop_sequence(data.get("additionalModelResponseFields"))
        elif kind == "metadata" and self.stop is not None:
            u = usage(data.get("usage") or {})
            w.finish(
                self.stop, output_tokens=u["output_tokens"], input_tokens=u["input_tokens"],
                cache_read=u["cache_read_input_tokens"], cache_write=u["cache_creation_input_tokens"],
                stop_sequence=self.stop_sequence,
            )  # fmt: skip

    def _delta(self, index: Any, delta: dict[str, Any]) -> None:
        w = self.writer
        if "text" in delta:
            w.text(delta["text"])
        elif "toolUse" in delta:
            w.tool_call(index, args=(delta["toolUse"] or {}).get("input", ""))
        elif "reasoningContent" in delta:
            rc = delta["reasoningContent"] or {}
            if rc.get("text"):
                w.thinking(rc["text"])
            if rc.get("signature"):
                w.signature(rc["signature"])
            if rc.get("redactedContent"):
                w.redacted_thinking(rc["redactedContent"])
