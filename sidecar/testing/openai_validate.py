"""What the Chat Completions API accepts in a request body, checked the way the service checks
it: roles and their fields, content parts, function names ^[a-zA-Z0-9_-]{1,64}$, tool schemas,
tool messages that answer the preceding assistant's tool calls, tool_choice naming a tool,
response_format, and no Anthropic-only field.

`validate_chat_request(body, quirks)` raises ValueError naming the first thing the API would
reject. The fake OpenAI upstream can refuse what this refuses (its `validate`), and the
conformance suite and the Claude Code end-to-end tests run every translated request through
it, so a translation the real API would reject fails the tests instead of the user.
"""

from __future__ import annotations

import json
import re
from typing import Any

from sidecar.protocol.openai import Quirks
from sidecar.protocol.openai.names import NAME_RE

_TOP = {"model", "messages", "tools", "tool_choice", "parallel_tool_calls", "max_tokens", "max_completion_tokens",
        "temperature", "top_p", "stop", "stream", "stream_options", "reasoning_effort", "response_format", "user",
        "seed", "n", "presence_penalty", "frequency_penalty", "logit_bias", "metadata", "store", "service_tier"}  # fmt: skip
_EFFORTS = {"none", "minimal", "low", "medium", "high", "xhigh"}
_ID = re.compile(r"^[A-Za-z0-9_-]{1,40}$")


def _fail(where: str, why: str) -> None:
    raise ValueError(f"{where}: {why}")


def _text_parts(content: Any, where: str, allow_none: bool = False) -> None:
    if content is None and allow_none:
        return
    if isinstance(content, str):
        return
    if not isinstance(content, list) or not content:
        _fail(where, "content must be a string or a non-empty list of text parts")
    for i, p in enumerate(content):
        if not isinstance(p, dict) or p.get("type") != "text" or not isinstance(p.get("text"), str) or set(p) != {"type", "text"}:
            _fail(f"{where}[{i}]", f"only text parts are accepted here, got {p!r}"[:200])


def _user_parts(content: Any, where: str) -> None:
    if isinstance(content, str):
        return
    if not isinstance(content, list) or not content:
        _fail(where, "user content must be a string or a non-empty list of parts")
    for i, p in enumerate(content):
        w = f"{where}[{i}]"
        kind = p.get("type") if isinstance(p, dict) else None
        if kind == "text" and isinstance(p.get("text"), str) and set(p) == {"type", "text"}:
            continue
        if kind == "image_url" and set(p) == {"type", "image_url"}:
            url = p["image_url"].get("url") if isinstance(p["image_url"], dict) else None
            if not isinstance(url, str) or not re.match(r"^(https?://|data:image/[a-z+.-]+;base64,)", url):
                _fail(w, f"image_url.url must be http(s) or a base64 image data URI: {url!r:.80}")
            continue
        if kind == "file" and set(p) == {"type", "file"} and isinstance(p["file"], dict):
            f = p["file"]
            if set(f) <= {"filename", "file_data", "file_id"} and (str(f.get("file_data", "")).startswith("data:") or f.get("file_id")):
                continue
        _fail(w, f"not a user content part Chat Completions accepts: {p!r:.200}")


def _schema(node: Any, where: str) -> None:
    if not isinstance(node, dict) or node.get("type") != "object":
        _fail(where, "function parameters must be a JSON Schema object with type 'object'")


def validate_chat_request(body: dict[str, Any], quirks: Quirks | None = None) -> None:
    """Raise ValueError naming the first thing the Chat Completions API would reject."""
    q = quirks or Quirks()
    allowed = set(_TOP)
    if q.top_k:
        allowed.add("top_k")
    if q.reasoning_request == "openrouter":
        allowed.add("reasoning")
    extra = set(body) - allowed
    if extra:
        _fail("request", f"fields Chat Completions does not take: {sorted(extra)}")
    if not isinstance(body.get("model"), str) or not body["model"]:
        _fail("model", "required")
    if "max_tokens" in body and "max_completion_tokens" in body:
        _fail("request", "max_tokens and max_completion_tokens are mutually exclusive")
    for key in ("max_tokens", "max_completion_tokens"):
        if key in body and (not isinstance(body[key], int) or body[key] < 1):
            _fail(key, "must be a positive integer")
    if "temperature" in body and not 0 <= body["temperature"] <= 2:
        _fail("temperature", "must be in [0, 2]")
    if "top_p" in body and not 0 <= body["top_p"] <= 1:
        _fail("top_p", "must be in [0, 1]")
    stop = body.get("stop")
    if stop is not None and not (isinstance(stop, str) or (isinstance(stop, list) and len(stop) <= 4 and all(isinstance(s, str) for s in stop))):
        _fail("stop", "a string or at most 4 strings")
    if "stream_options" in body and (body.get("stream") is not True or set(body["stream_options"]) - {"include_usage"}):
        _fail("stream_options", "only with stream: true, and only include_usage")
    if "reasoning_effort" in body and body["reasoning_effort"] not in _EFFORTS:
        _fail("reasoning_effort", f"{body['reasoning_effort']!r} is not an effort")
    names = _tools(body)
    _messages(body.get("messages"), q)
    choice = body.get("tool_choice")
    if choice is not None:
        if not names:
            _fail("tool_choice", "only allowed when tools are given")
        if isinstance(choice, dict):
            if choice.get("type") != "function" or choice.get("function", {}).get("name") not in names:
                _fail("tool_choice", f"must name one of the tools: {choice!r}")
        elif choice not in ("none", "auto", "required"):
            _fail("tool_choice", f"{choice!r} is not none, auto or required")
    if "parallel_tool_calls" in body and (not names or not isinstance(body["parallel_tool_calls"], bool)):
        _fail("parallel_tool_calls", "a boolean, only with tools")
    _response_format(body.get("response_format"))


def _tools(body: dict[str, Any]) -> set[str]:
    tools = body.get("tools")
    if tools is None:
        return set()
    if not isinstance(tools, list) or not tools or len(tools) > 128:
        _fail("tools", "a non-empty list of at most 128 tools")
    names: set[str] = set()
    for i, t in enumerate(tools):
        w = f"tools[{i}]"
        if not isinstance(t, dict) or set(t) != {"type", "function"} or t["type"] != "function":
            _fail(w, "must be exactly {type: function, function: {...}}")
        fn = t["function"]
        if not isinstance(fn, dict) or set(fn) - {"name", "description", "parameters", "strict"}:
            _fail(f"{w}.function", f"unknown keys {sorted(set(fn) - {'name', 'description', 'parameters', 'strict'})}")
        if not isinstance(fn.get("name"), str) or not NAME_RE.match(fn["name"]):
            _fail(f"{w}.function.name", f"{fn.get('name')!r} does not match ^[a-zA-Z0-9_-]{{1,64}}$")
        if fn["name"] in names:
            _fail(f"{w}.function.name", f"{fn['name']!r} is given twice")
        names.add(fn["name"])
        if "description" in fn and not isinstance(fn["description"], str):
            _fail(f"{w}.function.description", "must be a string")
        if "parameters" in fn:
            _schema(fn["parameters"], f"{w}.function.parameters")
    return names


def _messages(messages: Any, q: Quirks) -> None:
    if not isinstance(messages, list) or not messages:
        _fail("messages", "a non-empty list")
    pending: set[str] = set()  # tool calls of the last assistant message not yet answered
    for i, m in enumerate(messages):
        w = f"messages[{i}]"
        role = m.get("role") if isinstance(m, dict) else None
        if role != "tool" and pending:
            _fail(w, f"tool calls {sorted(pending)} must be answered by tool messages right after the assistant message")
        if role in ("system", "developer"):
            if set(m) - {"role", "content", "name"}:
                _fail(w, f"unknown keys {sorted(set(m) - {'role', 'content', 'name'})}")
            _text_parts(m.get("content"), f"{w}.content")
        elif role == "user":
            if set(m) - {"role", "content", "name"}:
                _fail(w, f"unknown keys {sorted(set(m) - {'role', 'content', 'name'})}")
            _user_parts(m.get("content"), f"{w}.content")
        elif role == "assistant":
            keys = {"role", "content", "tool_calls", "name", "refusal"} | ({q.reasoning_field} if q.send_reasoning else set())
            if set(m) - keys:
                _fail(w, f"unknown keys {sorted(set(m) - keys)}")
            calls = m.get("tool_calls")
            _text_parts(m.get("content"), f"{w}.content", allow_none=bool(calls))
            for j, c in enumerate(calls or []):
                cw = f"{w}.tool_calls[{j}]"
                if set(c) != {"id", "type", "function"} or c["type"] != "function":
                    _fail(cw, "must be exactly {id, type: function, function}")
                if not _ID.match(c["id"]) or c["id"] in pending:
                    _fail(f"{cw}.id", f"{c['id']!r} must be a unique id of at most 40 characters")
                fn = c["function"]
                if set(fn) != {"name", "arguments"} or not NAME_RE.match(fn["name"]):
                    _fail(f"{cw}.function", f"needs a valid name and arguments: {fn!r:.120}")
                if not isinstance(json.loads(fn["arguments"]), dict):
                    _fail(f"{cw}.function.arguments", "must be a JSON object encoded as a string")
                pending.add(c["id"])
        elif role == "tool":
            if set(m) != {"role", "tool_call_id", "content"}:
                _fail(w, "a tool message has exactly role, tool_call_id and content")
            if m["tool_call_id"] not in pending:
                _fail(f"{w}.tool_call_id", f"{m['tool_call_id']!r} answers no pending tool call of the preceding assistant message")
            pending.discard(m["tool_call_id"])
            _text_parts(m["content"], f"{w}.content")
        else:
            _fail(f"{w}.role", f"{role!r} is not a Chat Completions role")
    if pending:
        _fail("messages", f"tool calls {sorted(pending)} are never answered")


def _response_format(fmt: Any) -> None:
    if fmt is None:
        return
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind in ("text", "json_object") and set(fmt) == {"type"}:
        return
    if kind != "json_schema" or set(fmt) != {"type", "json_schema"}:
        _fail("response_format", f"not a response format: {fmt!r:.120}")
    js = fmt["json_schema"]
    if not NAME_RE.match(str(js.get("name"))) or not isinstance(js.get("schema"), dict):
        _fail("response_format.json_schema", "needs a valid name and a schema object")
    if js.get("strict"):
        _strict(js["schema"], "response_format.json_schema.schema")


def _strict(node: Any, where: str) -> None:
    if isinstance(node, list):
        for i, x in enumerate(node):
            _strict(x, f"{where}[{i}]")
        return
    if not isinstance(node, dict):
        return
    if node.get("type") == "object":
        if node.get("additionalProperties") is not False:
            _fail(where, "strict mode needs additionalProperties: false")
        if set(node.get("required", [])) != set(node.get("properties", {})):
            _fail(where, "strict mode needs every property required")
    for k, v in node.items():
        if k == "properties":
            for name, sub in v.items():
                _strict(sub, f"{where}.properties.{name}")
        elif k not in ("required", "enum", "const", "description", "title", "default"):
            _strict(v, f"{where}.{k}")
