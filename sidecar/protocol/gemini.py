"""Anthropic Messages -> Gemini `generateContent` (and `countTokens`) requests.

How the pieces map:

- `system` (string or text blocks) -> `systemInstruction`; a `role: "system"` message
  inside `messages` becomes a `<system-reminder>` text of a user turn where it stood.
- user / assistant -> `user` / `model` contents; consecutive turns of one role merge, so
  the roles alternate as Gemini requires. Text -> `text`; images and PDFs (base64 ->
  `inlineData`, URL -> `fileData`); plain-text documents -> `text`.
- `tool_use` -> `functionCall`; `tool_result` -> `functionResponse` named after the tool of
  the matching `tool_use` in the history (Gemini pairs calls and responses by name and
  order, not by id), `{"output": text}` or, with `is_error`, `{"error": text}`. Several
  results of one user message are several `functionResponse` parts of one content, first.
- Tool names Gemini refuses (over 64 characters, other characters) get an alias that the
  response side maps back (`gemini_tools`). Schemas go through `gemini_schema`.
- `thinking` -> `thinkingConfig`; `output_config.format` -> `responseSchema`.

Thought signatures travel through the client's history in thinking blocks whose
`signature` starts with ``gemini:`` (never a valid Anthropic signature, which is base64):
``gemini:t:SIG`` signs the block's own thought text (replayed as a `thought` part),
``gemini:n:SIG`` belongs to the part that follows the block (a function call), and
``gemini:p:SIG`` to the part before it (text whose signature came at its end, when more
content followed; the signature of an answer's last text is not kept). Anthropic's
own signatures, and thinking without a signature, are not sent to Gemini (it cannot verify
them). On Gemini 3 a model turn whose function calls carry no signature (a history from
another model) gets Google's documented `skip_thought_signature_validator` on the first.

What has no Gemini form is refused with a 400 that says so (Anthropic file ids, server
tools other than web search, remote MCP servers, more than 5 stop sequences).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

from sidecar.errors import InvalidRequest
from sidecar.protocol.gemini_schema import Inexpressible, json_schema, response_schema
from sidecar.protocol.gemini_tools import ToolNames, tool_config, translate_tools
from sidecar.protocol.system import fold_system_messages

SIGNATURE_PREFIX = "gemini:"  # every signature this module puts in a thinking block
THOUGHT_SIG = "gemini:t:"
NEXT_SIG = "gemini:n:"
PREV_SIG = "gemini:p:"
SKIP_SIGNATURE = "skip_thought_signature_validator"
MAX_STOP_SEQUENCES = 5
MAX_THINKING_BUDGET = 24576  # the smallest ceiling of the 2.5 models (Flash)
_EFFORT_LEVELS = {"low": "low", "medium": "high", "high": "high", "max": "high"}
_MIME_BY_EXT = {
    "png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "gif": "image/gif",
    "webp": "image/webp", "heic": "image/heic", "heif": "image/heif", "pdf": "application/pdf",
}  # fmt: skip


def is_gemini_signature(signature: object) -> bool:
    """True for a thinking signature this module made (it must never reach Anthropic)."""
    return isinstance(signature, str) and signature.startswith(SIGNATURE_PREFIX)


def generation(model: str) -> float | None:
    """The Gemini generation a model name belongs to (2.5, 3.0, ...), None when unknown."""
    name = model.removeprefix("models/")
    if re.match(r"^gemini-(flash|pro|flash-lite)-latest$", name):
        return 3.0
    m = re.match(r"^gemini-(\d+)(?:\.(\d+))?", name)
    return float(f"{m[1]}.{m[2] or 0}") if m else None


def model_path(model: str) -> str:
    """The resource path of a model: `models/NAME` (or a tuned model's own path)."""
    if model.startswith("tunedModels/"):
        return "tunedModels/" + quote(model.removeprefix("tunedModels/"), safe="-._")
    name = model.removeprefix("models/")
    if not name:
        raise InvalidRequest("no model to send to Gemini")
    return "models/" + quote(name, safe="-._")


def build_request(body: dict[str, Any], model: str, names: ToolNames) -> dict[str, Any]:
    """The `generateContent` body for the Anthropic request `body` (raises InvalidRequest)."""
    if body.get("mcp_servers"):
        raise InvalidRequest("remote MCP servers (mcp_servers) are an Anthropic API feature; Gemini cannot call them")
    out: dict[str, Any] = {"contents": build_contents(body.get("messages"), names, model)}
    system = _system_parts(body.get("system"))
    if system:
        out["systemInstruction"] = {"parts": system}
    tools, has_functions = translate_tools(body.get("tools"), names)
    if tools:
        out["tools"] = tools
    choice = body.get("tool_choice")
    if has_functions and choice is not None:
        out["toolConfig"] = tool_config(choice, names)
    config = _generation_config(body, model)
    if config:
        out["generationConfig"] = config
    return out


def build_count_request(body: dict[str, Any], model: str, names: ToolNames) -> dict[str, Any]:
    """The `countTokens` body: the would-be generateContent request, without its limits."""
    full = build_request(body, model, names)
    inner = {"model": model_path(model), **{k: v for k, v in full.items() if k != "generationConfig"}}
    return {"generateContentRequest": inner}


# -- contents ------------------------------------------------------------------------------


def build_contents(messages: Any, names: ToolNames, model: str) -> list[dict[str, Any]]:
    """Gemini `contents` for Anthropic `messages` (roles alternate; signatures restored)."""
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("messages: a non-empty list is required")
    builder = _Contents(names)
    for i, msg in enumerate(fold_system_messages(messages)):
        if not isinstance(msg, dict):
            raise InvalidRequest(f"messages[{i}] must be an object")
        role = msg.get("role")
        if role == "assistant":
            builder.add("model", [], _model_parts(i, msg.get("content"), builder))
        elif role == "user":
            builder.add("user", *_user_parts(i, msg.get("content"), builder))
        else:
            raise InvalidRequest(f"messages[{i}].role {role!r} is not one of user, assistant, system")
    contents = builder.finish()
    if not contents:
        raise InvalidRequest("messages: every message is empty; Gemini needs some content")
    if (gen := generation(model)) is not None and gen >= 3:
        _sign_unsigned_calls(contents)
    return contents


class _Contents:
    """Accumulates contents, merging consecutive turns of one role."""

    def __init__(self, names: ToolNames) -> None:
        self.names = names
        self.calls: dict[str, str] = {}  # tool_use id -> client tool name
        self._turns: list[tuple[str, list[dict[str, Any]], list[dict[str, Any]]]] = []

    def add(self, role: str, responses: list[dict[str, Any]], parts: list[dict[str, Any]]) -> None:
        if not responses and not parts:
            return
        if self._turns and self._turns[-1][0] == role:
            self._turns[-1][1].extend(responses)
            self._turns[-1][2].extend(parts)
        else:
            self._turns.append((role, responses, parts))

    def finish(self) -> list[dict[str, Any]]:
        # Function responses lead their content: they answer the model turn just before.
        return [{"role": role, "parts": [*responses, *parts]} for role, responses, parts in self._turns]


def _blocks(i: int, content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list) or not all(isinstance(b, dict) for b in content):
        raise InvalidRequest(f"messages[{i}].content must be a string or a list of content blocks")
    return content


def _model_parts(i: int, content: Any, ctx: _Contents) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    pending: str | None = None  # a signature for the next part
    for j, b in enumerate(_blocks(i, content)):
        kind = b.get("type")
        part: dict[str, Any] | None = None
        if kind == "text":
            part = {"text": b["text"]} if _text(i, j, b) else None
        elif kind == "tool_use":
            part = _function_call(i, j, b, ctx)
        elif kind == "thinking":
            sig = b.get("signature")
            if not is_gemini_signature(sig):
                continue  # Anthropic's signature (or none): Gemini cannot verify it
            assert isinstance(sig, str)
            if sig.startswith(NEXT_SIG):
                pending = sig.removeprefix(NEXT_SIG)
            elif sig.startswith(PREV_SIG):
                if parts and "thoughtSignature" not in parts[-1]:
                    parts[-1]["thoughtSignature"] = sig.removeprefix(PREV_SIG)
            elif sig.startswith(THOUGHT_SIG):
                text = b.get("thinking") if isinstance(b.get("thinking"), str) else ""
                part = {"text": text, "thought": True, "thoughtSignature": sig.removeprefix(THOUGHT_SIG)}
        elif kind == "redacted_thinking":
            continue  # Anthropic's encrypted reasoning means nothing to Gemini
        else:
            raise InvalidRequest(f"messages[{i}].content[{j}]: an assistant {kind!r} block cannot be sent to Gemini")
        if part is not None:
            if pending is not None:
                part.setdefault("thoughtSignature", pending)
                pending = None
            parts.append(part)
    if pending is not None and parts and "thoughtSignature" not in parts[-1]:
        parts[-1]["thoughtSignature"] = pending
    return parts


def _function_call(i: int, j: int, b: dict[str, Any], ctx: _Contents) -> dict[str, Any]:
    tool_id, name, args = b.get("id"), b.get("name"), b.get("input", {})
    if not isinstance(tool_id, str) or not isinstance(name, str):
        raise InvalidRequest(f"messages[{i}].content[{j}]: a tool_use needs a string id and name")
    if not isinstance(args, dict):
        raise InvalidRequest(f"messages[{i}].content[{j}]: tool_use input must be an object for Gemini")
    ctx.calls[tool_id] = name
    return {"functionCall": {"name": ctx.names.alias(name), "args": args}}


def _user_parts(i: int, content: Any, ctx: _Contents) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    responses: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for j, b in enumerate(_blocks(i, content)):
        kind = b.get("type")
        where = f"messages[{i}].content[{j}]"
        if kind == "text":
            if _text(i, j, b):
                parts.append({"text": b["text"]})
        elif kind == "image":
            parts.append(_image(where, b))
        elif kind == "document":
            parts.extend(_document(where, b))
        elif kind == "tool_result":
            response, media = _function_response(where, b, ctx)
            responses.append(response)
            parts.extend(media)
        else:
            raise InvalidRequest(f"{where}: a user {kind!r} block cannot be sent to Gemini")
    return responses, parts


def _function_response(where: str, b: dict[str, Any], ctx: _Contents) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    tool_id = b.get("tool_use_id")
    name = ctx.calls.get(tool_id) if isinstance(tool_id, str) else None
    if name is None:
        raise InvalidRequest(f"{where}: tool_result {tool_id!r} answers no tool_use earlier in the conversation")
    texts: list[str] = []
    media: list[dict[str, Any]] = []
    content = b.get("content")
    items: list[Any] = [content] if isinstance(content, str) else content if isinstance(content, list) else []
    for k, c in enumerate(items):
        if isinstance(c, str):
            texts.append(c)
        elif isinstance(c, dict) and c.get("type") == "text" and isinstance(c.get("text"), str):
            texts.append(c["text"])
        elif isinstance(c, dict) and c.get("type") == "image":
            media.append(_image(f"{where}.content[{k}]", c))
        elif isinstance(c, dict) and c.get("type") == "document":
            media.extend(_document(f"{where}.content[{k}]", c))
        else:
            kind = c.get("type") if isinstance(c, dict) else type(c).__name__
            raise InvalidRequest(f"{where}.content[{k}]: a {kind!r} block in a tool_result cannot be sent to Gemini")
    key = "error" if b.get("is_error") else "output"
    return {"functionResponse": {"name": ctx.names.alias(name), "response": {key: "\n".join(texts)}}}, media


def _text(i: int, j: int, b: dict[str, Any]) -> bool:
    """True for a text block with text (Gemini refuses empty text parts)."""
    if not isinstance(b.get("text"), str):
        raise InvalidRequest(f"messages[{i}].content[{j}]: a text block needs a string `text`")
    return bool(b["text"])


def _image(where: str, b: dict[str, Any]) -> dict[str, Any]:
    src = b.get("source")
    if not isinstance(src, dict):
        raise InvalidRequest(f"{where}: an image needs a source")
    kind = src.get("type")
    if kind == "base64":
        return _inline(where, src)
    if kind == "url":
        return _file_data(where, src, None)
    raise InvalidRequest(
        f"{where}: an image with source type {kind!r} cannot be sent to Gemini (Anthropic file ids mean nothing "
        "there); send it as base64 or a URL"
    )


def _document(where: str, b: dict[str, Any]) -> list[dict[str, Any]]:
    src = b.get("source")
    if not isinstance(src, dict):
        raise InvalidRequest(f"{where}: a document needs a source")
    kind = src.get("type")
    title = b.get("title") if isinstance(b.get("title"), str) else None
    if kind == "base64":
        return [_inline(where, src)]
    if kind == "url":
        return [_file_data(where, src, "application/pdf")]
    if kind == "text" and isinstance(src.get("data"), str):
        text = f"{title}\n\n{src['data']}" if title else src["data"]
        return [{"text": text}] if text else []
    if kind == "content" and isinstance(src.get("content"), list | str):
        inner = src["content"] if isinstance(src["content"], list) else [{"type": "text", "text": src["content"]}]
        out: list[dict[str, Any]] = [{"text": title}] if title else []
        for k, c in enumerate(inner):
            if isinstance(c, dict) and c.get("type") == "text" and isinstance(c.get("text"), str):
                if c["text"]:
                    out.append({"text": c["text"]})
            elif isinstance(c, dict) and c.get("type") == "image":
                out.append(_image(f"{where}.source.content[{k}]", c))
            else:
                raise InvalidRequest(f"{where}.source.content[{k}]: only text and image blocks can be sent to Gemini")
        return out
    raise InvalidRequest(
        f"{where}: a document with source type {kind!r} cannot be sent to Gemini; send it as base64, text or a URL"
    )


def _inline(where: str, src: dict[str, Any]) -> dict[str, Any]:
    mime, data = src.get("media_type"), src.get("data")
    if not isinstance(mime, str) or not isinstance(data, str) or not data:
        raise InvalidRequest(f"{where}: base64 media needs `media_type` and `data`")
    return {"inlineData": {"mimeType": mime, "data": data}}


def _file_data(where: str, src: dict[str, Any], default_mime: str | None) -> dict[str, Any]:
    url = src.get("url")
    if not isinstance(url, str) or not url.startswith(("https://", "http://", "gs://")):
        raise InvalidRequest(f"{where}: a URL source needs an http(s) `url`")
    ext = url.split("?", 1)[0].rsplit(".", 1)[-1].lower()
    mime = _MIME_BY_EXT.get(ext, default_mime)
    data: dict[str, Any] = {"fileUri": url}
    if mime:
        data["mimeType"] = mime
    return {"fileData": data}


def _sign_unsigned_calls(contents: list[dict[str, Any]]) -> None:
    """Gemini 3 refuses a model turn whose first function call has no signature."""
    for content in contents:
        if content["role"] != "model":
            continue
        first = next((p for p in content["parts"] if "functionCall" in p), None)
        if first is not None and "thoughtSignature" not in first:
            first["thoughtSignature"] = SKIP_SIGNATURE


# -- system, tools, config -----------------------------------------------------------------


def _system_parts(system: Any) -> list[dict[str, Any]]:
    if system is None:
        return []
    if isinstance(system, str):
        return [{"text": system}] if system else []
    if not isinstance(system, list):
        raise InvalidRequest("system must be a string or a list of text blocks")
    out = []
    for k, b in enumerate(system):
        if not isinstance(b, dict) or b.get("type") != "text" or not isinstance(b.get("text"), str):
            raise InvalidRequest(f"system[{k}] must be a text block")
        if b["text"]:
            out.append({"text": b["text"]})
    return out


def _generation_config(body: dict[str, Any], model: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for src, dst in (("max_tokens", "maxOutputTokens"), ("temperature", "temperature"), ("top_p", "topP"), ("top_k", "topK")):
        v = body.get(src)
        if v is not None:
            if not isinstance(v, int | float) or isinstance(v, bool):
                raise InvalidRequest(f"{src} must be a number")
            out[dst] = v
    stops = body.get("stop_sequences")
    if stops:
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise InvalidRequest("stop_sequences must be a list of strings")
        if len(stops) > MAX_STOP_SEQUENCES:
            raise InvalidRequest(f"Gemini accepts at most {MAX_STOP_SEQUENCES} stop sequences, not {len(stops)}")
        out["stopSequences"] = stops
    thinking = _thinking(body, model)
    if thinking is not None:
        out["thinkingConfig"] = thinking
    _structured_output(body, out)
    return out


def _thinking(body: dict[str, Any], model: str) -> dict[str, Any] | None:
    """`thinkingConfig` for models that think (2.5 and later); older ones get none."""
    t = body.get("thinking")
    gen = generation(model)
    if not isinstance(t, dict) or gen is None or gen < 2.5:
        return None
    kind = t.get("type")
    if kind == "disabled":
        return {"includeThoughts": False}
    if kind == "enabled":
        budget = t.get("budget_tokens")
        if not isinstance(budget, int) or isinstance(budget, bool) or budget < 0:
            raise InvalidRequest("thinking.budget_tokens must be a non-negative integer")
        return {"includeThoughts": True, "thinkingBudget": min(budget, MAX_THINKING_BUDGET)}
    if kind == "adaptive":
        out: dict[str, Any] = {"includeThoughts": True}
        effort = (body.get("output_config") or {}).get("effort") if isinstance(body.get("output_config"), dict) else None
        if gen >= 3 and effort in _EFFORT_LEVELS:
            out["thinkingLevel"] = _EFFORT_LEVELS[effort]
        return out
    raise InvalidRequest(f"thinking.type {kind!r} is not enabled, adaptive or disabled")


def _structured_output(body: dict[str, Any], out: dict[str, Any]) -> None:
    config = body.get("output_config")
    fmt = config.get("format") if isinstance(config, dict) else None
    fmt = fmt or body.get("output_format")
    if not fmt:
        return
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema" or not isinstance(fmt.get("schema"), dict):
        raise InvalidRequest("output format: only {type: json_schema, schema: {...}} can be sent to Gemini")
    out["responseMimeType"] = "application/json"
    try:
        out["responseSchema"] = response_schema(fmt["schema"])
    except Inexpressible:
        out["responseJsonSchema"] = json_schema(fmt["schema"])
