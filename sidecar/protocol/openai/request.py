"""An Anthropic Messages request as a Chat Completions request.

What maps: system (string or blocks) and `role: "system"` messages; text, images (base64
or URL), PDFs (as `file` parts) and text documents; tool_use as assistant `tool_calls` and
each tool_result as its own `tool` message (several per turn, `is_error` kept as a prefix,
images in results sent after them as a user message); tools and tool_choice (auto, any,
tool, none, the parallel flag); max_tokens, temperature, top_p, top_k, stop sequences;
thinking and `output_config.effort` as a reasoning effort; `output_config.format` as a
response_format. Thinking blocks from history are dropped or replayed as the server's
reasoning field (never their signatures).

What is consumed: cache_control, metadata, context_management, the billing-header system
block. What cannot be served (Anthropic server tools, MCP servers, documents or images by
file id or URL where the format has no place for them) is an InvalidRequest naming the
field, never dropped silently.
"""

from __future__ import annotations

from typing import Any

import msgspec

from sidecar.errors import InvalidRequest
from sidecar.protocol.openai.names import ToolNames, wire_tool_id
from sidecar.protocol.openai.quirks import Quirks
from sidecar.protocol.openai.response import as_dict
from sidecar.protocol.openai.schema import clean_schema, fits_strict

BILLING_HEADER = "x-anthropic-billing-header:"
_EFFORTS = {"low": "low", "medium": "medium", "high": "high", "max": "high", "xhigh": "high"}
_encode = msgspec.json.Encoder().encode


def translate_request(body: dict[str, Any], model: str, quirks: Quirks, stream: bool) -> tuple[dict[str, Any], ToolNames]:
    """The Chat Completions body for the Anthropic `body`, and the tool names it used."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("messages: must be a non-empty list")
    if body.get("mcp_servers"):
        raise InvalidRequest("mcp_servers: Anthropic's MCP connector cannot be used with an OpenAI-format provider")
    names = ToolNames()
    tools = _tools(body.get("tools"), names, quirks)
    out: dict[str, Any] = {"model": model, "messages": _Messages(quirks, names).build(body)}
    if tools:
        out["tools"] = tools
        _tool_choice(out, body.get("tool_choice"), names, quirks)
    _limits(out, body, model, quirks)
    _reasoning(out, body, model, quirks)
    note = _response_format(out, body, quirks)
    if note:
        _add_system(out["messages"], note, quirks)
    if stream:
        out["stream"] = True
        if quirks.include_usage:
            out["stream_options"] = {"include_usage": True}
    for param in quirks.drop_params:
        out.pop(param, None)
    if quirks.reasoning_drop_params and quirks.is_reasoning_model(model):
        for param in quirks.reasoning_drop_params:
            out.pop(param, None)
    return out, names


# ---------------------------------------------------------------- messages


def _text_of(blocks: Any, where: str) -> str:
    """The text of a system prompt or system message (a string or text blocks)."""
    if isinstance(blocks, str):
        return blocks
    if not isinstance(blocks, list):
        raise InvalidRequest(f"{where}: must be a string or a list of text blocks")
    texts = []
    for j, b in enumerate(blocks):
        if not isinstance(b, dict) or b.get("type") != "text" or not isinstance(b.get("text"), str):
            raise InvalidRequest(f"{where}[{j}]: only text blocks can be sent as a system prompt")
        if not b["text"].startswith(BILLING_HEADER):  # Anthropic's billing line means nothing elsewhere
            texts.append(b["text"])
    return "\n\n".join(texts)


class _Messages:
    """Builds the Chat Completions message list, checking tool_use / tool_result pairing."""

    def __init__(self, quirks: Quirks, names: ToolNames) -> None:
        self.q = quirks
        self.names = names
        self.out: list[dict[str, Any]] = []
        self.hoisted: list[str] = []
        self.awaiting: dict[str, str] = {}  # tool_use ids of the last assistant turn -> wire ids
        self.uses: dict[str, int] = {}  # how often each tool_use id was seen (re-used ids are re-keyed)
        self.deferred: list[dict[str, Any]] = []  # system messages held until tool answers are in

    def build(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        top = _text_of(body["system"], "system") if body.get("system") is not None else ""
        for i, m in enumerate(body["messages"]):
            if not isinstance(m, dict):
                raise InvalidRequest(f"messages[{i}]: must be an object")
            role, content = m.get("role"), m.get("content")
            if role == "user":
                self._user(i, content)
            elif role == "assistant":
                self._assistant(i, content)
            elif role == "system":
                self._system(_text_of(content, f"messages[{i}].content"))
            else:
                raise InvalidRequest(f"messages[{i}].role: {role!r} is not user, assistant or system")
        if self.awaiting:
            raise InvalidRequest(f"tool_use ids {sorted(self.awaiting)} have no tool_result after them")
        self.out.extend(self.deferred)
        system = "\n\n".join(t for t in [top, *self.hoisted] if t)
        if system:
            self.out.insert(0, {"role": "system", "content": system})
        return self.out

    def _system(self, text: str) -> None:
        if not text:
            return
        if self.q.system_messages == "hoist":
            self.hoisted.append(text)
        elif self.awaiting:
            self.deferred.append({"role": "system", "content": text})
        else:
            self.out.append({"role": "system", "content": text})

    def _settle(self, i: int, answered: set[str]) -> None:
        missing = set(self.awaiting) - answered
        if missing:
            raise InvalidRequest(f"messages[{i}]: tool_use ids {sorted(missing)} of the previous assistant turn have no tool_result")
        self.awaiting = {}
        self.out.extend(self.deferred)
        self.deferred = []

    def _user(self, i: int, content: Any) -> None:
        if isinstance(content, str):
            self._settle(i, set())
            self.out.append({"role": "user", "content": content})
            return
        if not isinstance(content, list):
            raise InvalidRequest(f"messages[{i}].content: must be a string or a list of blocks")
        parts: list[dict[str, Any]] = []
        after: list[dict[str, Any]] = []  # images that came back in tool results
        answered: set[str] = set()
        for j, block in enumerate(content):
            where = f"messages[{i}].content[{j}]"
            if not isinstance(block, dict):
                raise InvalidRequest(f"{where}: must be an object")
            if block.get("type") == "tool_result":
                tool_id = block.get("tool_use_id")
                if not isinstance(tool_id, str) or tool_id not in self.awaiting:
                    raise InvalidRequest(f"{where}: tool_result for {tool_id!r} answers no tool_use of the previous assistant turn")
                if tool_id in answered:
                    raise InvalidRequest(f"{where}: a second tool_result for {tool_id!r}")
                answered.add(tool_id)
                self.out.append(self._tool_message(block, self.awaiting[tool_id], after, where))
            else:
                parts.extend(_user_parts(block, where))
        self._settle(i, answered)
        parts = after + parts
        if parts:
            self.out.append({"role": "user", "content": _compact(parts)})

    def _tool_message(self, block: dict[str, Any], wire_id: str, after: list[dict[str, Any]], where: str) -> dict[str, Any]:
        content = block.get("content")
        texts: list[str] = []
        images: list[dict[str, Any]] = []
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            for k, item in enumerate(content):
                for part in _user_parts(item, f"{where}.content[{k}]"):
                    if part["type"] == "text":
                        texts.append(part["text"])
                    else:
                        images.append(part)
        elif content is not None:
            raise InvalidRequest(f"{where}.content: must be a string or a list of blocks")
        text = "\n".join(texts)
        if images:
            text += f"\n({len(images)} attachment(s) follow in the next user message)"
            after.append({"type": "text", "text": f"Attachments returned by tool call {wire_id}:"})
            after.extend(images)
        if block.get("is_error"):
            text = "Error: " + text
        return {"role": "tool", "tool_call_id": wire_id, "content": text}

    def _assistant(self, i: int, content: Any) -> None:
        self._settle(i, set())
        texts: list[str] = []
        reasoning: list[str] = []
        calls: list[dict[str, Any]] = []
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if not isinstance(blocks, list):
            raise InvalidRequest(f"messages[{i}].content: must be a string or a list of blocks")
        for j, b in enumerate(blocks):
            where = f"messages[{i}].content[{j}]"
            kind = b.get("type") if isinstance(b, dict) else None
            if kind == "text" and isinstance(b.get("text"), str):
                texts.append(b["text"])
            elif kind == "tool_use":
                calls.append(self._call(b, where))
            elif kind == "thinking":
                reasoning.append(str(b.get("thinking") or ""))
            elif kind == "redacted_thinking":
                continue  # encrypted for Anthropic only: nothing another model can read
            else:
                raise InvalidRequest(f"{where}: a {kind!r} block cannot be sent to an OpenAI-format server")
        msg: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
        if calls:
            msg["tool_calls"] = calls
        thought = "".join(reasoning)
        if self.q.send_reasoning and thought:
            msg[self.q.reasoning_field] = thought
            if msg["content"] is None and not calls:
                msg["content"] = ""
        if msg["content"] is None and not calls:
            return  # only thinking, and the server is not sent reasoning: nothing to say
        self.out.append(msg)

    def _call(self, b: dict[str, Any], where: str) -> dict[str, Any]:
        tool_id, name, tool_input = b.get("id"), b.get("name"), b.get("input", {})
        if not isinstance(tool_id, str) or not tool_id:
            raise InvalidRequest(f"{where}.id: a tool_use needs an id")
        if not isinstance(name, str):
            raise InvalidRequest(f"{where}.name: a tool_use needs a name")
        if tool_id in self.awaiting:
            raise InvalidRequest(f"{where}: tool_use id {tool_id!r} appears twice in one message")
        n = self.uses.get(tool_id, 0)
        self.uses[tool_id] = n + 1
        # An id re-used in a later turn (seen with some upstreams) gets a distinct wire id,
        # consistently for the call and the result that follows it.
        wire = wire_tool_id(tool_id if n == 0 else f"{tool_id}#{n}", self.q.tool_ids, self.q.tool_id_max_length)
        self.awaiting[tool_id] = wire
        arguments = _encode(tool_input if tool_input is not None else {}).decode()
        return {"id": wire, "type": "function", "function": {"name": self.names.add(name), "arguments": arguments}}


def _compact(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    """Text-only content as one string (several servers accept nothing else), else parts."""
    if all(p["type"] == "text" for p in parts):
        return "\n".join(p["text"] for p in parts)
    return parts


def _data_uri(source: dict[str, Any], where: str) -> str:
    media, data = source.get("media_type"), source.get("data")
    if not isinstance(media, str) or not isinstance(data, str):
        raise InvalidRequest(f"{where}.source: base64 data needs media_type and data")
    return f"data:{media};base64,{data}"


def _user_parts(block: Any, where: str) -> list[dict[str, Any]]:
    """The Chat Completions content parts for one user (or tool result) block."""
    if not isinstance(block, dict):
        raise InvalidRequest(f"{where}: must be an object")
    kind = block.get("type")
    if kind == "text":
        if not isinstance(block.get("text"), str):
            raise InvalidRequest(f"{where}.text: must be a string")
        return [{"type": "text", "text": block["text"]}]
    if kind == "image":
        src = block.get("source") or {}
        if src.get("type") == "base64":
            return [{"type": "image_url", "image_url": {"url": _data_uri(src, where)}}]
        if src.get("type") == "url" and isinstance(src.get("url"), str):
            return [{"type": "image_url", "image_url": {"url": src["url"]}}]
        raise InvalidRequest(f"{where}.source: an image of source type {src.get('type')!r} cannot be sent to an OpenAI-format server")
    if kind == "document":
        return _document(block, where)
    if kind == "search_result":
        body = "\n".join(c.get("text", "") for c in block.get("content") or [] if isinstance(c, dict))
        return [{"type": "text", "text": f"{block.get('title', '')}\n{block.get('source', '')}\n{body}".strip()}]
    raise InvalidRequest(f"{where}: a {kind!r} block cannot be sent to an OpenAI-format server")


def _document(block: dict[str, Any], where: str) -> list[dict[str, Any]]:
    src = block.get("source") or {}
    title = block.get("title") if isinstance(block.get("title"), str) else None
    head = "\n".join(x for x in (title, block.get("context") if isinstance(block.get("context"), str) else None) if x)
    kind = src.get("type")
    if kind == "base64" and src.get("media_type") == "application/pdf":
        name = (title or "document").replace("/", "_")
        name = name if name.lower().endswith(".pdf") else name + ".pdf"
        part = {"type": "file", "file": {"filename": name, "file_data": _data_uri(src, where)}}
        return ([{"type": "text", "text": head}] if head else []) + [part]
    if kind == "text" and isinstance(src.get("data"), str):
        return [{"type": "text", "text": f"{head}\n{src['data']}" if head else src["data"]}]
    if kind == "content" and isinstance(src.get("content"), list):
        parts = [{"type": "text", "text": head}] if head else []
        for k, item in enumerate(src["content"]):
            parts.extend(_user_parts(item, f"{where}.source.content[{k}]"))
        return parts
    raise InvalidRequest(f"{where}.source: a document of source type {kind!r} cannot be sent to an OpenAI-format server")


# ---------------------------------------------------------------- tools


def _tools(tools: Any, names: ToolNames, quirks: Quirks) -> list[dict[str, Any]]:
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise InvalidRequest("tools: must be a list")
    out = []
    for i, t in enumerate(tools):
        if not isinstance(t, dict):
            raise InvalidRequest(f"tools[{i}]: must be an object")
        if t.get("type") not in (None, "custom"):
            raise InvalidRequest(
                f"tools[{i}]: {t.get('name')!r} is an Anthropic-defined tool ({t['type']}) that an OpenAI-format server cannot run"
            )
        name, schema = t.get("name"), t.get("input_schema")
        if not isinstance(name, str) or not name:
            raise InvalidRequest(f"tools[{i}].name: must be a non-empty string")
        if not isinstance(schema, dict):
            raise InvalidRequest(f"tools[{i}].input_schema: must be an object")
        params = clean_schema(schema, quirks.strip_schema_keys)
        params.setdefault("type", "object")
        fn: dict[str, Any] = {"name": names.add(name)}
        if isinstance(t.get("description"), str) and t["description"]:
            fn["description"] = t["description"]
        fn["parameters"] = params
        out.append({"type": "function", "function": fn})
    return out


def _tool_choice(out: dict[str, Any], choice: Any, names: ToolNames, quirks: Quirks) -> None:
    if choice is None:
        return
    if not isinstance(choice, dict):
        raise InvalidRequest("tool_choice: must be an object")
    kind = choice.get("type")
    if quirks.tool_choice != "off":
        if kind == "auto":
            out["tool_choice"] = "auto"
        elif kind == "any":
            out["tool_choice"] = "required" if quirks.tool_choice == "full" else "auto"
        elif kind == "none":
            out["tool_choice"] = "none"
        elif kind == "tool":
            name = choice.get("name")
            if not isinstance(name, str) or name not in names.to_wire:
                raise InvalidRequest(f"tool_choice.name: {name!r} is not one of the request's tools")
            out["tool_choice"] = {"type": "function", "function": {"name": names.to_wire[name]}}
        else:
            raise InvalidRequest(f"tool_choice.type: {kind!r} is not auto, any, tool or none")
    if choice.get("disable_parallel_tool_use") is True and quirks.parallel_tool_calls and kind != "none":
        out["parallel_tool_calls"] = False


# ---------------------------------------------------------------- parameters


def _limits(out: dict[str, Any], body: dict[str, Any], model: str, quirks: Quirks) -> None:
    max_tokens = body.get("max_tokens")
    if isinstance(max_tokens, int) and not isinstance(max_tokens, bool):
        cap = quirks.cap_for(model)
        out[quirks.max_tokens_field] = min(max_tokens, cap) if cap else max_tokens
    for key in ("temperature", "top_p", *(("top_k",) if quirks.top_k else ())):
        value = body.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[key] = value
    stops = body.get("stop_sequences")
    if stops:
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise InvalidRequest("stop_sequences: must be a list of strings")
        if len(stops) > quirks.max_stop_sequences:
            raise InvalidRequest(
                f"stop_sequences: {len(stops)} given, but this provider takes at most {quirks.max_stop_sequences}"
            )
        out["stop"] = stops


def requested_effort(body: dict[str, Any]) -> str | None:
    """The reasoning effort the Anthropic request asks for (low | medium | high), or None."""
    thinking = as_dict(body.get("thinking"))
    config = as_dict(body.get("output_config"))
    effort = _EFFORTS.get(str(config.get("effort")))
    kind = thinking.get("type")
    if kind == "disabled":
        return None
    if kind == "enabled":
        budget = thinking.get("budget_tokens")
        if isinstance(budget, int) and budget > 0:
            return effort or ("low" if budget < 2048 else "medium" if budget < 8192 else "high")
        return effort or "medium"
    if kind == "adaptive":
        return effort or "medium"
    return effort


def _reasoning(out: dict[str, Any], body: dict[str, Any], model: str, quirks: Quirks) -> None:
    effort = requested_effort(body)
    if effort is None or not quirks.reasoning_for(model):
        return
    if quirks.reasoning_request == "effort":
        out["reasoning_effort"] = effort
        return
    thinking = body.get("thinking") or {}
    budget = thinking.get("budget_tokens") if isinstance(thinking, dict) else None
    out["reasoning"] = {"max_tokens": budget} if isinstance(budget, int) and budget > 0 else {"effort": effort}


def _add_system(messages: list[dict[str, Any]], text: str, quirks: Quirks) -> None:
    """Add a system instruction: at the end, or into the leading system message (hoist)."""
    if quirks.system_messages != "hoist":
        messages.append({"role": "system", "content": text})
    elif messages and messages[0]["role"] == "system":
        messages[0] = {"role": "system", "content": messages[0]["content"] + "\n\n" + text}
    else:
        messages.insert(0, {"role": "system", "content": text})


def _response_format(out: dict[str, Any], body: dict[str, Any], quirks: Quirks) -> str | None:
    """Set response_format for a structured-output request; return an instruction to add
    when the server cannot enforce the schema itself."""
    config = as_dict(body.get("output_config"))
    fmt = config.get("format") or body.get("output_format")
    if fmt is None:
        return None
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema" or not isinstance(fmt.get("schema"), dict):
        raise InvalidRequest("output_config.format: only {type: json_schema, schema: {...}} can be sent to an OpenAI-format server")
    schema = clean_schema(fmt["schema"], ("$schema",))
    mode = quirks.json_schema
    if mode in ("strict", "loose"):
        strict = mode == "strict" and fits_strict(schema)
        out["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "structured_output", "schema": schema, "strict": strict},
        }
        return None
    if mode == "json_object":
        out["response_format"] = {"type": "json_object"}
    # Without a schema-enforcing mode the schema still reaches the model, as an instruction.
    return "Respond with only a JSON object that matches this JSON schema:\n" + _encode(schema).decode()
